# RFC 5232 3: flags are IMAP flags; an invalid one is ignored (warned).
require ["imap4flags"];
addflag "\\Bogus";
setflag "a(b";
removeflag "\\Seen \\Foo";
addflag ["$Label1", "\\flagged", "Invoice"];

