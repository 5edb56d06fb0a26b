require "fileinto";
# RFC 5228 2.7.1: "?" matches exactly one character.
if header :matches "subject" "?ndeliver*" { fileinto "bounces"; }
if header :matches "subject" "?nvoice attached" { fileinto "invoice"; }
