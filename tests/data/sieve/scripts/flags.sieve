require ["imap4flags", "fileinto"];
setflag "\\Seen";
addflag ["$Work", "\\Flagged $Work"];
if header :contains "subject" "present" { removeflag "\\seen"; fileinto "presents"; }
if hasflag :is "$work" { fileinto :flags "\\Answered $Done" "done"; }
if header :contains "from" "alice" { setflag "\\Deleted"; }
