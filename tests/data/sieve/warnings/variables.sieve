# Strings with variables are not checked at compile time.
require ["variables", "imap4flags", "date"];
set "f" "\\Seen";
addflag "${f}";
if exists "${f}" { keep; }
if currentdate :zone "${f}" "year" "2020" { keep; }
