require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "spam"; }
if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "3" { fileinto "many"; }
if header :count "eq" :comparator "i;ascii-numeric" "received" "2" { fileinto "two-hops"; }
if header :value "lt" "subject" "J" { fileinto "early"; }
# RFC 5231 4.2: the count is compared as a string by the test's comparator.
if header :count "gt" "received" "10" { fileinto "casemap-count"; }
if address :count "lt" :comparator "i;octet" ["to", "cc"] "10" { fileinto "octet-count"; }
