require ["envelope", "fileinto"];
if envelope :domain :is "from" "example.org" { fileinto "from-org"; }
if envelope :localpart :is "to" "bob+box" { fileinto "to-local"; }
if envelope :all :matches "from" "*@*" { fileinto "any"; }
