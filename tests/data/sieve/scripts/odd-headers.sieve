require ["fileinto", "variables", "relational", "comparator-i;ascii-numeric", "imap4flags", "date"];
if header :is "subject" "" { fileinto "empty-subject"; }
if exists ["subject", "x-empty"] { fileinto "exists-empty"; }
if header :contains "x-folded" "part second" { fileinto "unfolded"; }
if header :matches "x-folded" "first part*second part" { fileinto "folded-match"; }
if address :localpart :is "from" "john.doe" { fileinto "quoted-local"; }
if address :count "eq" :comparator "i;ascii-numeric" "cc" "3" { fileinto "cc-three"; }
if address :count "eq" :comparator "i;ascii-numeric" "to" "0" { fileinto "empty-group"; }
if address :all :matches "to" "*" { fileinto "to-anything"; }
if header :matches "from" "*" { set "whole" "${0}"; fileinto "from.${whole}"; }
if header :value "eq" "x-none" "" { fileinto "missing-eq-empty"; }
if size :under 1 { fileinto "never"; }
addflag "\\seen \\SEEN $x $X";
if hasflag :count "eq" :comparator "i;ascii-numeric" "2" { fileinto "two-flags"; }
if date :originalzone "date" "zone" "+0530" { fileinto "zone-0530"; }
if date :zone "+0000" "date" "date" "2023-11-17" { fileinto "utc-17th"; }
if body :raw :is "" { fileinto "empty-body"; }
