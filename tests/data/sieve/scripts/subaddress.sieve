require ["subaddress", "envelope", "fileinto"];
if envelope :detail "to" "box" { fileinto "box"; }
if envelope :user "to" "bob" { fileinto "bob"; }
if address :detail "to" "box" { fileinto "hdr-box"; }
if address :user :is "from" "coyote" { fileinto "coyote"; }
