require "fileinto";
if address :localpart :is "from" "coyote" { fileinto "coyote"; }
if address :domain :is "from" "EXAMPLE.de" { fileinto "de"; }
if address :all :is ["to", "cc"] "b@y.example" { fileinto "group"; }
if address :is "to" "bob@example.com" { fileinto "bob"; }
if address :contains "from" "Alice" { fileinto "alice-name"; }
if address :matches :domain "sender" "*.org" { fileinto "org-sender"; }
