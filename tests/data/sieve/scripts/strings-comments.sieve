# Hash comment
require ["fileinto", "variables"]; /* bracketed
   comment over lines */
set "body" text: # comment after text:
Line one
..dot-stuffed line
.
;
if string :matches "${body}" "Line one*.dot-stuffed line*" { fileinto "multiline"; }
if header :contains "subject" "\p\r\e\s\ent" { fileinto "escapes"; }
if header :matches "subject" "*\\*" { fileinto "literal-star"; }
if string :is "a\"b" "a\"b" { fileinto "quote"; }
