require ["fileinto", "variables", "relational", "comparator-i;ascii-numeric"];
# Escaped wildcards, empty keys, several header names, octet vs casemap.
if header :matches "subject" "*\\?*" { fileinto "question"; }
if header :matches "subject" "\\*" { fileinto "star-only"; }
if header :contains ["x-nothing", "subject"] "" { fileinto "has-subject"; }
if header :is :comparator "i;octet" "subject" "I have a present for you" { fileinto "octet-exact"; }
if not anyof (exists "x-spam-flag", header :contains "precedence" "bulk") { fileinto "clean"; }
if header :matches "from" "*<*>*" { fileinto "angle.${2}"; }
if header :matches "to" "?*,*" { fileinto "list-to"; }
if header :count "ge" :comparator "i;ascii-numeric" "received" "1" { fileinto "relayed"; }
if header :value "eq" :comparator "i;ascii-numeric" "x-spam-score" "007" { fileinto "seven"; }
