require "fileinto";
if header :matches "subject" "*present*" { fileinto "presents"; }
if header :contains "subject" "DRAFT" { fileinto "drafts"; }
if header :is "x-caffeine" "c8h10n4o2" { fileinto "coffee"; }
if header :comparator "i;octet" :is "x-caffeine" "c8h10n4o2" { fileinto "octet"; }
if header :contains "subject" "München" { fileinto "umlaut"; }
if header :is "subject" "" { fileinto "empty"; }
if not exists "subject" { fileinto "nosubject"; }
