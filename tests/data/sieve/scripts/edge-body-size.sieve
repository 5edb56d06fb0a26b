require ["fileinto", "body"];
if size :over 10K { fileinto "huge"; }
if size :under 1 { fileinto "empty"; }
if body :matches "*anvil*" { fileinto "anvil"; }
if body :text :is "" { fileinto "empty-body"; }
if body :raw :matches "*--XX-boundary--*" { fileinto "raw-boundary"; }
if body :content "text" :contains "Total" { fileinto "text-total"; }
if body :content "multipart" :contains "invoice.pdf" { fileinto "multipart"; }
