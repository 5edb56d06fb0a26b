require ["fileinto", "imap4flags", "variables", "copy", "envelope"];
# fileinto of INBOX merges with keep (RFC 5228 2.10.3).
if header :contains "subject" "present" { fileinto "INBOX"; keep; }
# Flags in a variable (RFC 5232 3).
set "f" "";
addflag "f" "$Important";
if exists "list-id" { fileinto :flags "${f}" :copy "Important"; }
if header :matches "from" "*" { set "whole" "${0}"; }
if string :contains "${whole}" "MAILER-DAEMON" { discard; }
