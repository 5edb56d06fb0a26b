require ["imap4flags", "fileinto", "variables", "relational", "comparator-i;ascii-numeric"];
addflag "\\Flagged";
addflag "MyFlags" ["\\Seen", "$A $B"];
if hasflag :count "ge" :comparator "i;ascii-numeric" "MyFlags" "3" { fileinto :flags "${MyFlags}" "counted"; }
if hasflag :contains "MyFlags" "$" { removeflag "MyFlags" "$A"; fileinto :flags "${myflags}" "dollar"; }
setflag "";
keep :flags "\\Draft";
