require "fileinto";
if header :frobnicate "subject" "x" { fileinto "a"; }
