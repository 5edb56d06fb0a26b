require ["variables", "fileinto", "relational", "comparator-i;ascii-numeric", "regex"];
set :lower :upperfirst "name" "hELLO";
set :quotewildcard "q" "a*b?c\\";
set :length "len" "${q}";
set "re" "a\\.b\\*";
if string :is "${name}-${len}-${re}" "Hello-8-a\\.b\\*" { fileinto "modifiers"; }
if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" { fileinto "count-nonempty"; }
if header :regex :comparator "i;octet" "subject" "^[A-Z]" { fileinto "upper-start"; }
if header :regex "subject" "^i (have|had)" { fileinto "casemap-regex-${1}"; }
if string :value "gt" :comparator "i;ascii-numeric" "10" "9" { fileinto "numeric-gt"; }
if string :value "gt" "10" "9" { fileinto "string-gt"; }
