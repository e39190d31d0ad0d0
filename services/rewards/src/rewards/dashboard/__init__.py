"""The marketers' dashboard: ``GET /dashboard`` (HTML and its own static assets), the login
that turns the admin token into a signed session cookie, and the cookie's checks (CSRF
included) that the admin API accepts as an alternative to the Bearer header."""
