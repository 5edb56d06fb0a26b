require ["encoded-character", "fileinto"];
if header :contains "subject" "${hex:70 72 65}sent" { fileinto "${unicode:50}resents"; }
if header :contains "subject" "${unicode:00FC}" { fileinto "u-umlaut"; }
