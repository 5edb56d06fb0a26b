require ["reject", "fileinto"];
if header :contains "subject" "money" { reject "No spam, thanks."; }
elsif header :is "from" "MAILER-DAEMON@mx.example.com" { discard; }
