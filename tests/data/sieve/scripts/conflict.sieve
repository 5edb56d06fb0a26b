require ["reject", "fileinto"];
fileinto "first";
if header :contains "subject" "present" { reject "too late"; }
