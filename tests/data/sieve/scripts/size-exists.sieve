require "fileinto";
if size :over 600 { fileinto "big"; }
if size :under 400 { fileinto "small"; }
if exists ["list-id", "precedence"] { fileinto "list"; }
if exists "x-nope" { fileinto "never"; }
if allof (exists "date", not exists "message-id") { fileinto "no-msgid"; }
