# RFC 5260 4.1: :zone is "+hhmm" or "-hhmm".
require ["date", "relational"];
if date :zone "abc" "date" "year" "2020" { keep; }
if currentdate :zone "+0100" :value "ge" "year" "2000" { keep; }
if currentdate :zone "Europe/Berlin" "year" "2020" { keep; }
