"""What an operator can see and do: shared by the `smm-gateway` commands and the
dashboard the gateway serves at `/admin/` (when `gateway.admin_key` is set).

    mount       the Router at /admin and its template config (`gateway.edge.app` adds them)
    operations  the changes (resolve an order, confirm a rate, client keys, money),
                each one function that both the CLI and the dashboard call
    explain     the candidate decision of every service, as data (`route`, `catalog show`)
    queries     what the dashboard reads: overview, providers, order search, clients
    charts      the week's orders and margin as inline SVG, drawn here
    guard       the admin key, sessions, CSRF tokens, the audit trail
    api         the JSON API under /admin/api/ (Authorization: Bearer <admin key>)
    pages       the HTML pages (Jinja2 templates in `templates/`, a little JS in `static/`)
    answers     every admin error as JSON `{"error": ...}`

A layer of its own, above routing and state, beside the HTTP edge: `gateway.edge.app`
mounts it, and it imports neither the edge nor the operator commands.
"""

from __future__ import annotations
