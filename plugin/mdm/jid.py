"""The little JID handling the core needs. The bridge hands us JIDs the server already
normalised (nodeprep/resourceprep ran there), so splitting is all that is left."""


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def domain(jid: str) -> str:
    return bare(jid).rsplit("@", 1)[-1]


def is_full(jid: str) -> bool:
    return "/" in jid
