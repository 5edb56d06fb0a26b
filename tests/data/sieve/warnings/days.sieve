# RFC 5230 4.1: the :days minimum is greater than 0.
require ["vacation"];
vacation :days 0 "I am away";
