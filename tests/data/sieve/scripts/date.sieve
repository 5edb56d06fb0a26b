require ["date", "relational", "fileinto", "variables"];
if date :originalzone "date" "weekday" "2" { fileinto "tuesday"; }
if date :zone "+0000" "date" "date" "2023-11-14" { fileinto "utc-14th"; }
if date :value "ge" :originalzone "date" "hour" "20" { fileinto "evening"; }
if date :matches :zone "+0000" "date" "iso8601" "*" { fileinto "iso.${1}"; }
