"""The daemon's web pages for people: the status page at `/` (see `status_page.register`)."""
