require ["reject", "vacation", "vacation-seconds", "fileinto"];
if exists "x-spam-flag" { reject "Spam is not welcome."; stop; }
if header :contains "from" "carol" {
  vacation :days 1 :from "bob@example.com" :handle "carol-handle" :mime text:
Content-Type: text/plain; charset=utf-8

I'm away.
.
;
}
if header :contains "subject" "present" {
  vacation :seconds 3600 :addresses ["bob@example.com", "bob+box@example.com"] "Away";
}
