"""Load order for a batch of packages, with the reason for every edge.

    >>> plan = LoadPlan.build([read_mcz(p) for p in paths])
    >>> [p.name for p in plan.order]
    ['Zinc-HTTP', 'Teapot-Core']
    >>> plan.edges[0].reasons[0]
    'Teapot-Core subclasses ZnClient from Zinc-HTTP'

An edge A -> B means A must load before B. Edges come from superclasses,
traits, class extensions and `dependencies/` members. A requirement no
package in the batch provides is "expected in the image".
"""

import heapq
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Set, Tuple, Union

from hotload.errors import PlanError
from hotload.formats.mcz import McPackage, PlannedPackage, VersionInfo

Package = Union[McPackage, PlannedPackage]  # planning reads only their `facts` (mcz.PlanFacts), `path` and `size`


@dataclass(frozen=True)
class Requirement:
    kind: str  # superclass | trait | extension | dependency
    name: str  # class, trait or package name required
    by: str  # what needs it (class name, or the package for dependencies)

    def describe(self, package: str, provider: str) -> str:
        source = f"from {provider}" if provider else "expected in the image"
        if self.kind == "superclass":
            return f"{package} subclasses {self.name} {source}"
        if self.kind == "trait":
            return f"{package} uses trait {self.name} {source}"
        if self.kind == "extension":
            return f"{package} extends {self.name} {source}"
        return f"{package} depends on {self.name} {source}"


@dataclass
class Edge:
    before: str
    after: str
    reasons: List[str] = field(default_factory=list)


@dataclass
class PackagePlan:
    package: Package
    requirements: List[Tuple[Requirement, str]]  # (requirement, provider package or "")

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def expected_in_image(self) -> List[Requirement]:
        return [req for req, provider in self.requirements if not provider]


@dataclass
class LoadPlan:
    packages: List[PackagePlan]
    order: List[PackagePlan]
    edges: List[Edge]
    cycles: List[List[str]]

    @classmethod
    def build(cls, packages: Sequence[Package]) -> "LoadPlan":
        _refuse_duplicates(packages)
        providers = _class_providers(packages)
        providing_packages = set(providers.values())
        plans, edges = [], {}
        for package in packages:
            resolved = []
            for requirement in requirements_of(package):
                provider = _provider_of(requirement, providers, providing_packages)
                resolved.append((requirement, provider))
                if provider and provider != package.name:
                    edge = edges.setdefault((provider, package.name), Edge(provider, package.name))
                    reason = requirement.describe(package.name, provider)
                    if reason not in edge.reasons:
                        edge.reasons.append(reason)
            plans.append(PackagePlan(package, resolved))
        order, cycles = _order(plans, list(edges.values()))
        return cls(plans, order, list(edges.values()), cycles)

    def edges_into(self, name: str) -> List[Edge]:
        return [edge for edge in self.edges if edge.after == name]

    def to_json(self) -> dict:
        return {
            "packages": [
                {
                    "name": plan.name,
                    "version": plan.package.facts.version,
                    "file": str(plan.package.path),
                    "classes": len(plan.package.facts.classes),
                    "methods": plan.package.facts.method_count(),
                    "requires": [
                        {"kind": req.kind, "name": req.name, "by": req.by, "provider": provider or None}
                        for req, provider in plan.requirements
                    ],
                }
                for plan in self.packages
            ],
            "order": [plan.name for plan in self.order],
            "edges": [{"before": e.before, "after": e.after, "reasons": e.reasons} for e in self.edges],
            "cycles": self.cycles,
        }


def requirements_of(package: Package) -> List[Requirement]:
    """Structural requirements, each once, in source order."""
    facts = package.facts
    own = {name for name, _, _ in facts.classes}
    found: Dict[Tuple[str, str], Requirement] = {}
    for name, superclass, traits in facts.classes:
        if superclass and superclass not in own and ("superclass", superclass) not in found:
            found[("superclass", superclass)] = Requirement("superclass", superclass, name)
        for trait in traits:
            if trait and trait not in own and ("trait", trait) not in found:
                found[("trait", trait)] = Requirement("trait", trait, name)
    for class_name, _ in facts.methods:
        if class_name and class_name not in own and ("extension", class_name) not in found:
            found[("extension", class_name)] = Requirement("extension", class_name, class_name)
    for version_name in facts.dependencies:
        key = ("dependency", VersionInfo(version_name).package_name)
        if key not in found:
            found[key] = Requirement("dependency", key[1], facts.name)
    return list(found.values())


def _refuse_duplicates(packages: Sequence[Package]):
    seen: Dict[str, Package] = {}
    problems = []
    for package in packages:
        other = seen.setdefault(package.facts.name, package)
        if other is not package:
            problems.append(
                f"{package.path}: two versions of package {package.facts.name} in one batch "
                f"({other.facts.version} in {other.path} and {package.facts.version}); push only one"
            )
    if problems:
        raise PlanError("\n".join(problems))


def _class_providers(packages: Sequence[Package]) -> Dict[str, str]:
    providers: Dict[str, str] = {}
    for package in reversed(packages):  # the first package to define a class provides it
        facts = package.facts
        providers.update(dict.fromkeys([name for name, _, _ in facts.classes], facts.name))
    return providers


def _provider_of(requirement: Requirement, providers: Dict[str, str], providing_packages: Set[str]) -> str:
    """The package providing a class, or for a dependency the package itself when it provides classes."""
    if requirement.kind == "dependency":
        return requirement.name if requirement.name in providing_packages else ""
    return providers.get(requirement.name, "")


def _order(plans: List[PackagePlan], edges: List[Edge]) -> Tuple[List[PackagePlan], List[List[str]]]:
    """Topological order, stable by input position; each cycle loads as one group."""
    index = {plan.name: position for position, plan in enumerate(plans)}
    successors: Dict[str, List[str]] = {plan.name: [] for plan in plans}
    for edge in edges:
        successors[edge.before].append(edge.after)
    components = _strongly_connected(list(index), successors)
    component_of = {name: number for number, members in enumerate(components) for name in members}
    cycles = [sorted(members, key=index.get) for members in components if len(members) > 1]

    incoming = {number: 0 for number in range(len(components))}
    component_successors: Dict[int, set] = {number: set() for number in range(len(components))}
    for edge in edges:
        a, b = component_of[edge.before], component_of[edge.after]
        if a != b and b not in component_successors[a]:
            component_successors[a].add(b)
            incoming[b] += 1

    # Ready components leave in order of their first member's input position (unique per component).
    first_position = [min(index[name] for name in members) for members in components]
    ready = [(first_position[n], n) for n, count in incoming.items() if count == 0]
    heapq.heapify(ready)
    ordered_names: List[str] = []
    while ready:
        _, number = heapq.heappop(ready)
        ordered_names.extend(sorted(components[number], key=index.get))
        for successor in component_successors[number]:
            incoming[successor] -= 1
            if incoming[successor] == 0:
                heapq.heappush(ready, (first_position[successor], successor))
    by_name = {plan.name: plan for plan in plans}
    return [by_name[name] for name in ordered_names], cycles


def _strongly_connected(names: List[str], successors: Dict[str, List[str]]) -> List[List[str]]:
    """Tarjan's algorithm, iterative."""
    counter = 0
    number: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack = set()
    components: List[List[str]] = []
    for root in names:
        if root in number:
            continue
        work = [(root, 0)]
        while work:
            node, child_index = work.pop()
            if child_index == 0:
                number[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = successors[node]
            if child_index < len(children):
                work.append((node, child_index + 1))
                child = children[child_index]
                if child not in number:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], number[child])
                continue
            if low[node] == number[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components
