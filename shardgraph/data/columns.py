"""Which column of an edge file holds what: ids, relation, entity types, edge attributes.

`--columns` is either positional (`lhs,rel,rhs`, `rhs,-,lhs`, `lhs,rhs,weight`; `-` skips a
column) or by header name (`src=lhs,dst=rhs,type=rel`: columns not named are skipped). Column
roles are also read from a header's names (`src`, `target`, `id_1`, `weight` ...) when a file
has one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from shardgraph.errors import InputError

ROLES = ("lhs", "rel", "rhs", "lhs_type", "rhs_type")
ATTRIBUTES = ("weight", "timestamp")  # columns kept as float32 edge attributes
ATTRIBUTE_PREFIX = "attr:"  # attr:NAME keeps any other numeric column as attribute NAME

# header names (lower case, without spaces, '_' and '-') -> role
_NAMES = {
    "lhs": "lhs src source from head subject sub u node1 id1 fromnodeid fromid sourceid srcid sourcenode srcnode "
           "start startnode fromnode nodea",
    "rhs": "rhs dst dest destination target to tail object obj v node2 id2 tonodeid toid targetid dstid targetnode "
           "dstnode end endnode tonode nodeb",
    "rel": "rel relation relationship predicate type edgetype etype relationtype reltype label edgelabel",
    "lhs_type": "lhstype srctype sourcetype fromtype headtype",
    "rhs_type": "rhstype dsttype targettype totype tailtype",
    "weight": "weight weights w edgeweight",
    "timestamp": "timestamp time ts date datetime unixtime",
}
NAME_ROLES = {name: role for role, names in _NAMES.items() for name in names.split()}
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def normalise_name(name: str) -> str:
    return re.sub(r"[\s_\-\"']", "", name).lower()


def role_of_name(name: str) -> str | None:
    """The role a header name stands for (src -> lhs, weight -> weight), or None."""
    return NAME_ROLES.get(normalise_name(name))


def _attribute_name(role: str) -> str | None:
    if role in ATTRIBUTES:
        return role
    if role.startswith(ATTRIBUTE_PREFIX) and _ATTRIBUTE_NAME.match(role[len(ATTRIBUTE_PREFIX):]):
        return role[len(ATTRIBUTE_PREFIX):]
    return None


@dataclass(frozen=True)
class ColumnRoles:
    """Which column of a file holds the lhs id, the rhs id and (optionally) the relation name."""

    lhs: int
    rhs: int
    rel: int | None
    width: int  # fields per line
    lhs_type: int | None = None  # optional columns naming the entity type of each end
    rhs_type: int | None = None
    attributes: tuple[tuple[str, int], ...] = field(default=())  # (name, column) of float32 edge attributes
    names: tuple[str, ...] = field(default=())  # the header's column names, where there is one

    @classmethod
    def from_list(cls, roles: Sequence[str], text: str, names: Sequence[str] = ()) -> ColumnRoles:
        roles = [r.strip() for r in roles]
        attributes = [(_attribute_name(r), i) for i, r in enumerate(roles) if r not in ROLES and r != "-"]
        bad = [roles[i] for name, i in attributes if name is None]
        repeated = [r for r in set(roles) if r != "-" and roles.count(r) > 1]
        if bad or repeated or "lhs" not in roles or "rhs" not in roles:
            raise InputError(
                "--columns must list lhs and rhs once each; rel, lhs_type, rhs_type, weight and timestamp at most "
                f"once; attr:NAME for another numeric column to keep; and '-' for a column to skip (e.g. "
                f"lhs,rel,rhs or lhs,rhs,weight or src=lhs,dst=rhs). Got {text!r} instead."
            )

        def find(role: str) -> int | None:
            return roles.index(role) if role in roles else None

        return cls(lhs=roles.index("lhs"), rhs=roles.index("rhs"), rel=find("rel"), width=len(roles),
                   lhs_type=find("lhs_type"), rhs_type=find("rhs_type"),
                   attributes=tuple((str(name), i) for name, i in attributes), names=tuple(names))

    @classmethod
    def parse(cls, text: str) -> ColumnRoles:
        """Parse positional roles: 'lhs,rel,rhs' / 'lhs,rhs' / 'rhs,-,lhs,rel' / 'lhs,rhs,weight'."""
        return cls.from_list(text.split(","), text)

    @classmethod
    def by_name(cls, text: str, names: Sequence[str], where: str) -> ColumnRoles:
        """Parse 'src=lhs,dst=rhs,type=rel' against a header's column names; other columns are skipped."""
        roles = ["-"] * len(names)
        for item in text.split(","):
            name, _, role = item.partition("=")
            name = name.strip()
            if name not in names:
                raise InputError(f"--columns names column {name!r}, which is not in the header "
                                 f"({', '.join(names)})", path=where)
            roles[list(names).index(name)] = role.strip()
        return cls.from_list(roles, text, names)

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ColumnRoles | None:
        """Roles read from header names (src/dst/weight ...), or None when they do not name lhs and rhs once."""
        roles = [role_of_name(n) or "-" for n in names]
        if roles.count("lhs") != 1 or roles.count("rhs") != 1 or any(
                roles.count(r) > 1 for r in set(roles) if r != "-"):
            return None
        return cls.from_list(roles, ",".join(names), names)

    @classmethod
    def for_width(cls, width: int, path: str, numeric_tail: int = 0) -> ColumnRoles:
        """Default roles by width: lhs,rhs; lhs,rel,rhs (lhs,rhs,weight when the third column holds
        decimals); lhs,rhs,weight,timestamp when the last two of four columns are numbers."""
        if width == 3:
            if numeric_tail >= 1:
                return cls(lhs=0, rhs=1, rel=None, width=3, attributes=(("weight", 2),))
            return cls(lhs=0, rel=1, rhs=2, width=3)
        if width == 2:
            return cls(lhs=0, rhs=1, rel=None, width=2)
        if width == 4 and numeric_tail >= 2:
            return cls(lhs=0, rhs=1, rel=None, width=4, attributes=(("weight", 2), ("timestamp", 3)))
        raise InputError(
            f"has {width} field{'s' * (width != 1)} per line; say which hold what with --columns "
            "(e.g. lhs,rel,rhs,- or lhs,rhs,weight, or by header name: src=lhs,dst=rhs)",
            path=path, line=None,
        )

    def role_names(self) -> list[str]:
        roles = ["-"] * self.width
        for role in ROLES:
            column = getattr(self, role)
            if column is not None:
                roles[column] = role
        for name, column in self.attributes:
            roles[column] = name if name in ATTRIBUTES else ATTRIBUTE_PREFIX + name
        return roles

    def name_of(self, column: int) -> str:
        label = self.names[column] if column < len(self.names) else self.role_names()[column].replace("-", "skipped")
        return f"{column + 1} ({label})"

    def present(self) -> list[tuple[str, int]]:
        """(role, column) of every id/type role the file has, lhs first."""
        return [(role, getattr(self, role)) for role in ROLES if getattr(self, role) is not None]

    def describe(self) -> str:
        return ",".join(self.role_names())
