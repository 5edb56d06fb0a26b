# RFC 5322 3.6.8: a field name is printable ASCII without ':' or space.
require ["date"];
if exists "bad name:" { keep; }
if header ["to", "bad:x"] "x" { keep; }
if date "x-bad header" "year" "2020" { keep; }
if header :contains ["Subject", "X-Spam-Flag"] "x" { keep; }
