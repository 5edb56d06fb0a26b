require ["fileinto", "variables", "envelope", "subaddress", "relational"];
if header :contains "from" "Jörg" { fileinto "decoded-name"; }
if header :contains "subject" "MÜNCHEN" { fileinto "casemap-non-ascii"; }
if header :matches "subject" "Gr??e*" { fileinto "question-multibyte"; }
if header :matches "subject" "I * a *" { set "first" "${1}"; }
if header :matches "subject" "no such thing *" { set "x" "y"; }
set "after" "${1}";
if string :is "${after}" "have" { fileinto "match-vars-kept"; }
if string :matches "" "*" { fileinto "empty-star"; }
if string :is "${env.x}" "${env.x}" { fileinto "unknown-namespace"; }
if envelope :detail "from" "" { fileinto "from-detail-empty"; }
if envelope :user :is "from" "sender" { fileinto "from-user"; }
if size :over 1G { fileinto "huge"; }
if header :value "lt" :comparator "i;octet" "from" "a" { fileinto "octet-lt"; }
if header :contains :comparator "i;octet" "subject" "present" { fileinto "octet-contains"; }
