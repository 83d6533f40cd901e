// The login link's page: posts its one-time code at once (the button does the same without
// script). Fetching the link alone never spends the code.
'use strict';
document.getElementById('login-link').submit();
