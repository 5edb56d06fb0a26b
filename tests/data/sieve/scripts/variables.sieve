require ["variables", "fileinto"];
if header :matches "Subject" "[*] *" { fileinto "lists.${1}"; }
if header :matches "From" "*<*@*>" { set :lower "dom" "${3}"; fileinto "from.${dom}"; }
set "a" "x";
set :upperfirst "b" "${a}yz";
set :length "n" "${b}";
if string :is "${b}-${n}" "Xyz-3" { fileinto "ok"; }
if string :matches "${unknown}" "" { fileinto "empty-unknown"; }
