# RFC 5463 4: body (RFC 5173) turned on behind ihave, without a require
# of its own: the body tests see the message's body.
require ["ihave", "fileinto"];
if ihave "body" {
    if body :contains "birdseed" { fileinto "birdseed"; }
    if body :text :contains "invoice attached" { fileinto "decoded"; }
    if body :raw :contains "UGxlYXNl" { fileinto "raw"; }
}
if header :contains "subject" "present" { fileinto "subject"; }
