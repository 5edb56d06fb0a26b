require ["fileinto", "variables", "relational", "comparator-i;ascii-numeric"];
if address :all :comparator "i;octet" :is "from" "coyote@desert.example.org" { fileinto "octet-addr"; }
if address :localpart :matches "from" "*" { fileinto "local.${1}"; }
if address :domain :matches ["to", "cc"] "*.example" { fileinto "dom.${1}"; }
if address :count "eq" :comparator "i;ascii-numeric" "cc" "2" { fileinto "cc-two"; }
if address :count "eq" :comparator "i;ascii-numeric" "bcc" "0" { fileinto "no-bcc"; }
if address :is "from" "joerg@example.de" { fileinto "joerg"; }
if address :all :contains "to" "builder" { fileinto "display-name"; }
