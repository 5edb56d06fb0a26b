require ["copy", "fileinto"];
fileinto :copy "archive";
if header :contains "subject" "invoice" { redirect :copy "accounts@example.net"; }
if header :contains "subject" "draft" { fileinto "lists"; }
