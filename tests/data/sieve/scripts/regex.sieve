require ["regex", "variables", "fileinto"];
if header :regex "subject" "^\\[([a-z-]+)\\]" { fileinto "re.${1}"; }
if address :regex :domain "from" "^(desert|author)\\.example\\.org$" { fileinto "re.domain"; }
if header :regex "x-spam-score" "^[5-9]$" { fileinto "re.spam"; }
