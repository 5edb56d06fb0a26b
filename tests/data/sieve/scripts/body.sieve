require ["body", "fileinto"];
if body :contains "birdseed" { fileinto "birdseed"; }
if body :text :contains "invoice attached" { fileinto "decoded"; }
if body :raw :contains "UGxlYXNl" { fileinto "raw"; }
if body :content "application/pdf" :contains "secret" { fileinto "pdf"; }
if body :contains "money fast" { fileinto "money"; }
