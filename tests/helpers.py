"""Small builders for unit tests of the core."""

from lxml import etree

from mdm import namespaces as ns


def message(to: str, frm: str = "bob@localhost/desktop", type_: str | None = "chat", body: str | None = "hi",
            extra: str = "") -> etree._Element:
    attrs = f' to="{to}" from="{frm}"' + (f' type="{type_}"' if type_ else "")
    inner = (f"<body>{body}</body>" if body is not None else "") + extra
    return etree.fromstring(f'<message xmlns="{ns.CLIENT}"{attrs}>{inner}</message>')
