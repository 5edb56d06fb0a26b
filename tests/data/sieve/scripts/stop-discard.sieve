require "fileinto";
if header :contains "subject" "present" { fileinto "first"; stop; }
if exists "list-id" { discard; stop; }
fileinto "second";
keep;
