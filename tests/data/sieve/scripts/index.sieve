require ["index", "date", "fileinto"];
if header :index 1 :last :contains "received" "author" { fileinto "last-hop"; }
if header :index 2 :contains "received" "mx" { fileinto "wrong"; }
if date :index 1 :originalzone "received" "zone" "-0500" { fileinto "zone"; }
