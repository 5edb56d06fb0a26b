require ["vacation", "fileinto"];
if not exists "list-id" {
  vacation :days 3 :subject "Away" :addresses ["bob@example.com"] "I am away until Monday.";
}
if header :contains "subject" "present" { fileinto "presents"; }
