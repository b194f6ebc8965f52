"""The web app's routes: HTML pages, the JSON API, the error handler and security headers."""
