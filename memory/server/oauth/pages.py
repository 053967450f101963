"""The three small pages a person sees while connecting an assistant: sign in, allow, and an error.

Server-rendered, every value escaped, no scripts. The test suite relies on the form contract:
the login form posts `username` and `password`; the consent form has a button named `approve`.
"""

from html import escape

__all__ = ["login_page", "consent_page", "error_page", "SCOPE_WORDS"]

SCOPE_WORDS = {
    "memories:read": "Read your memories",
    "memories:write": "Store, change and erase your memories",
}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222}"
          "input{display:block;width:100%;margin:.3rem 0 1rem;padding:.5rem;box-sizing:border-box}"
          "button{padding:.5rem 1.2rem;margin-right:.5rem}.error{color:#b00020}small{color:#666}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>")


def _hidden(fields: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


def login_page(*, action: str, hidden: dict[str, str], client_name: str, error: str | None = None,
               username: str = "") -> str:
    problem = f'<p class="error">{escape(error)}</p>' if error else ""
    return _page("Sign in to Memory", (
        f"<h1>Sign in to Memory</h1><p><strong>{escape(client_name)}</strong> wants to connect to your memory.</p>"
        f"{problem}<form method=post action=\"{escape(action)}\">{_hidden(hidden)}"
        f'<label>Account<input name="username" autocomplete="username" required value="{escape(username)}"></label>'
        f'<label>Password<input name="password" type="password" autocomplete="current-password" required></label>'
        f"<button type=submit>Sign in</button></form>"))


def consent_page(*, action: str, hidden: dict[str, str], user: str, client_name: str, redirect_host: str,
                 scopes: list[str]) -> str:
    items = "".join(f"<li>{escape(SCOPE_WORDS.get(s, s))} <small>({escape(s)})</small></li>" for s in scopes)
    return _page("Allow access?", (
        f"<h1>Allow access?</h1><p>Signed in as <strong>{escape(user)}</strong>.</p>"
        f"<p><strong>{escape(client_name)}</strong> (returning to <strong>{escape(redirect_host)}</strong>) asks to:</p>"
        f"<ul>{items}</ul><form method=post action=\"{escape(action)}\">{_hidden(hidden)}"
        f'<button type=submit name="approve" value="yes">Allow</button>'
        f'<button type=submit name="deny" value="yes">Deny</button></form>'))


def error_page(message: str) -> str:
    return _page("Cannot connect", f"<h1>Cannot connect</h1><p class=error>{escape(message)}</p>"
                                   f"<p>Go back to your assistant and try connecting again.</p>")
