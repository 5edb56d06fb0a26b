require ["fileinto", "copy"];
if anyof (header :contains "subject" "present", exists "list-id") {
  if allof (exists "date", not exists "x-none") {
    fileinto :copy "nested";
    if size :over 1 { redirect :copy "archive@example.org"; redirect :copy "archive@example.org"; }
  } elsif true { fileinto "never"; }
  else { fileinto "never2"; }
} elsif header :is "subject" "" {
  discard;
} else {
  fileinto "other";
  stop;
  fileinto "after-stop";
}
