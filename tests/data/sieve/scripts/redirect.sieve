if address :domain :is "from" "example.net" { redirect "carol-fwd@example.org"; }
if exists "list-id" { redirect "archive@example.org"; redirect "archive@example.org"; keep; }
