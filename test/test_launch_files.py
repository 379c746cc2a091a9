"""Checks of the launch files, their YAML configs and setup.py (``launch`` cannot run here).

The launch files are parsed with ``ast`` and checked against the real nodes: executables
exist in setup.py, every parameter a launch file or config file sets is one the node
declares (read from instantiated nodes), values typed where launch would otherwise guess,
launch arguments declared where used and passed where included, the per-robot wiring
(monitor and scheduler in the namespace of the edge they adapt, on the robot or the server),
and only launch/launch_ros API that exists
(the names below were read from ros2/launch and ros2/launch_ros). Each node is then started
the way launch_ros would start it with the default launch arguments (``-r __node:=``,
``-r __ns:=``, ``--params-file`` config, ``--params-file`` of the launch file's values) and
must take every value. setup.py is run with ``setuptools.setup`` captured to check what it
installs.
"""

import ast
import contextlib
import os
import runpy
import shutil
from pathlib import Path

import pytest
import yaml
from ros_fixtures import (  # noqa: F401  (fixture)
    ros_domain_id,
    tiny_bundle_fixture,
    with_measurements,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIG_DIR = REPO / "config"
PACKAGE = "split_infer"
#: Where setup.py installs the default bundle, and where the launch files' default points.
DEFAULT_BUNDLE_SOURCE = f"{PACKAGE}/assets/default_bundle"
DEFAULT_BUNDLE_SHARE = f"share/{PACKAGE}/bundles/default"
#: The nodes ``split_inference.launch.py`` must bring up.
GRAPH_EXECUTABLES = {"edge_node", "cloud_node", "bandwidth_monitor", "scheduler",
                     "link_prober", "probe_echo"}
#: The nodes edge.launch.py starts itself, in the robot's namespace.
ROBOT_EXECUTABLES = {"edge_node", "link_prober"}
#: A robot's control plane (control.launch.py), in the robot's namespace on either side.
CONTROL_EXECUTABLES = {"bandwidth_monitor", "scheduler"}
#: Parameters whose launch default is a sentinel the node replaces with what it resolved
#: (split_point -1 / ratio 0: the start-up choice, configurations.startup_configuration).
RESOLVED_BY_NODE = {"edge_node": {"split_point", "ratio"}}

# Public names of the launch / launch_ros modules the launch files may import from.
KNOWN_API = {
    "launch": {"LaunchDescription", "LaunchContext", "LaunchService", "Action", "Condition",
               "Substitution", "SomeSubstitutionsType"},
    "launch.actions": {
        "DeclareLaunchArgument", "AppendEnvironmentVariable", "EmitEvent", "ExecuteLocal",
        "ExecuteProcess", "GroupAction", "IncludeLaunchDescription", "LogInfo",
        "OpaqueCoroutine", "OpaqueFunction", "PopEnvironment", "PopLaunchConfigurations",
        "PushEnvironment", "PushLaunchConfigurations", "RegisterEventHandler",
        "ResetEnvironment", "ResetLaunchConfigurations", "SetEnvironmentVariable",
        "SetLaunchConfiguration", "Shutdown", "TimerAction", "UnregisterEventHandler",
        "UnsetEnvironmentVariable", "UnsetLaunchConfiguration"},
    "launch.substitutions": {
        "AnonName", "AllSubstitution", "AndSubstitution", "AnySubstitution", "Command",
        "EnvironmentVariable", "EqualsSubstitution", "FileContent", "FindExecutable",
        "IfElseSubstitution", "LaunchConfiguration", "LaunchLogDir", "LocalSubstitution",
        "NotEqualsSubstitution", "NotSubstitution", "OrSubstitution", "PathJoinSubstitution",
        "PythonExpression", "SubstitutionFailure", "TextSubstitution", "ThisLaunchFile",
        "ThisLaunchFileDir"},
    "launch.launch_description_sources": {
        "AnyLaunchDescriptionSource", "FrontendLaunchDescriptionSource",
        "PythonLaunchDescriptionSource"},
    "launch.conditions": {"IfCondition", "UnlessCondition", "LaunchConfigurationEquals",
                          "LaunchConfigurationNotEquals"},
    "launch_ros.actions": {
        "ComposableNodeContainer", "LifecycleNode", "LifecycleTransition",
        "LoadComposableNodes", "Node", "PushROSNamespace", "PushRosNamespace", "ROSTimer",
        "RosTimer", "SetParameter", "SetParametersFromFile", "SetRemap", "SetROSLogDir",
        "SetUseSimTime"},
    "launch_ros.substitutions": {"ExecutableInPackage", "FindPackage", "FindPackagePrefix",
                                 "FindPackageShare", "Parameter"},
    "launch_ros.parameter_descriptions": {"Parameter", "ParameterFile", "ParameterValue"},
}
# Keyword arguments of launch_ros.actions.Node (its own, then ExecuteProcess/ExecuteLocal's
# and Action's, which it forwards).
NODE_KWARGS = {
    "executable", "package", "name", "namespace", "exec_name", "parameters", "remappings",
    "ros_arguments", "arguments", "prefix", "cwd", "env", "additional_env", "shell",
    "sigterm_timeout", "sigkill_timeout", "emulate_tty", "output", "output_format",
    "cached_output", "log_cmd", "on_exit", "respawn", "respawn_delay", "respawn_max_retries",
    "condition"}
DECLARE_ARGUMENT_KWARGS = {"default_value", "description", "choices", "condition"}
PARAMETER_VALUE_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


# -- extraction ----------------------------------------------------------------------------------


def call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            return node.func.id
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
    return None


def const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def console_scripts() -> dict[str, str]:
    """setup.py's console_scripts: name → 'module:function'."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for call in ast.walk(tree):
        if call_name(call) == "setup":
            entry_points = ast.literal_eval(keyword(call, "entry_points"))
            return {k.strip(): v.strip() for k, _, v in
                    (line.partition("=") for line in entry_points["console_scripts"])}
    raise AssertionError("setup.py has no setup() call")


def node_source(executable: str) -> Path:
    module = console_scripts()[executable].partition(":")[0]
    return REPO / (module.replace(".", "/") + ".py")


def subscribed_topics(source: Path) -> set[str]:
    """Literal topic names the node module subscribes to."""
    topics = set()
    for call in ast.walk(ast.parse(source.read_text())):
        if call_name(call) == "create_subscription" and len(call.args) >= 2:
            topic = const_str(call.args[1])
            if topic is not None:
                topics.add(topic)
    return topics


def coerce(text: str, value_type: type):
    """What ``ParameterValue(<launch argument>, value_type=...)`` makes of the argument's text
    (launch.utilities.type_utils.coerce_to_type)."""
    if value_type is str:
        return text
    if value_type in (int, float):
        return value_type(text)
    value = yaml.safe_load({"1": "true", "0": "false"}.get(text, text))
    assert isinstance(value, bool), f"{text!r} is no bool"
    return value


#: A launch value that depends on the launch context (a package path, an OpaqueFunction's
#: result): its key is checked, its value is not known statically.
UNRESOLVED = object()


class LaunchFile:
    """What a launch file declares, uses and passes, from its syntax tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.calls = [c for c in ast.walk(self.tree) if isinstance(c, ast.Call)]
        self.functions = {f.name: f for f in ast.walk(self.tree)
                          if isinstance(f, ast.FunctionDef)}
        # Module-level NAME = <constant>.
        self.constants = {t.id: n.value.value for n in self.tree.body
                          if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                          for t in n.targets if isinstance(t, ast.Name)}

    def named(self, name: str) -> list[ast.Call]:
        return [c for c in self.calls if call_name(c) == name]

    def declared_arguments(self) -> dict[str, ast.Call]:
        declared = {}
        for call in self.named("DeclareLaunchArgument"):
            name = const_str(call.args[0]) if call.args else None
            assert name is not None, f"{self.path.name}:{call.lineno}: argument name not literal"
            declared[name] = call
        return declared

    def required_arguments(self) -> set[str]:
        return {n for n, c in self.declared_arguments().items()
                if keyword(c, "default_value") is None}

    def used_configurations(self) -> set[str]:
        used = set()
        for call in self.named("LaunchConfiguration"):
            name = const_str(call.args[0]) if call.args else None
            assert name is not None, f"{self.path.name}:{call.lineno}: name not literal"
            used.add(name)
        return used

    def nodes(self) -> list[ast.Call]:
        return self.named("Node")

    def executable(self, node: ast.Call) -> str:
        executable = const_str(keyword(node, "executable"))
        assert executable is not None, f"{self.path.name}:{node.lineno}: executable not literal"
        return executable

    def literal(self, value: ast.AST | None):
        """A constant, or a module-level constant's value; UNRESOLVED otherwise."""
        if isinstance(value, ast.Constant):
            return value.value
        if isinstance(value, ast.Name) and value.id in self.constants:
            return self.constants[value.id]
        return UNRESOLVED

    def node_name(self, node: ast.Call) -> str:
        name = self.literal(keyword(node, "name"))
        assert isinstance(name, str), f"{self.path.name}:{node.lineno}: give Node a literal name"
        return name

    def parameter_elements(self, node: ast.Call) -> list[ast.AST]:
        """What a Node gets in ``parameters``, following a list variable built in the same
        function (``params = [...]`` then ``params.append({...})``)."""
        value = keyword(node, "parameters")
        if value is None:
            return []
        if isinstance(value, ast.List):
            return list(value.elts)
        if not isinstance(value, ast.Name):
            raise AssertionError(f"{self.path.name}: unsupported parameters expression")
        elements: list[ast.AST] = []
        for stmt in ast.walk(self.enclosing_function(node)):
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == value.id for t in stmt.targets):
                assert isinstance(stmt.value, ast.List), "parameters must be a list"
                elements.extend(stmt.value.elts)
            if (isinstance(stmt, ast.Call) and call_name(stmt) == "append"
                    and isinstance(stmt.func.value, ast.Name)
                    and stmt.func.value.id == value.id):
                elements.extend(stmt.args)
        return elements

    def parameter_dicts(self, node: ast.Call) -> list[ast.Dict]:
        return [e for e in self.parameter_elements(node) if isinstance(e, ast.Dict)]

    def config_files(self, node: ast.Call) -> list[str]:
        """The config/*.yaml files a Node loads: every non-dict ``parameters`` entry must be a
        launch argument whose default names one."""
        files = []
        for element in self.parameter_elements(node):
            if isinstance(element, ast.Dict):
                continue
            assert call_name(element) == "LaunchConfiguration", \
                f"{self.path.name}:{element.lineno}: params files come from launch arguments"
            argument = self.declared_arguments()[const_str(element.args[0])]
            default = keyword(argument, "default_value")
            names = [s for a in ast.walk(default) if (s := const_str(a)) and s.endswith(".yaml")]
            assert len(names) == 1, f"{self.path.name}:{argument.lineno}: default names no yaml"
            files.append(names[0])
        return files

    def launch_values(self, node: ast.Call) -> dict[str, object]:
        """The parameters a Node's dicts set, valued as launch would with every launch
        argument at its default: a typed launch argument coerced, a literal as it is."""
        values: dict[str, object] = {}
        for params in self.parameter_dicts(node):
            for key, value in zip(params.keys, params.values):
                name = const_str(key)
                values[name] = self.literal(value)
                if call_name(value) == "ParameterValue":
                    argument, value_type = value.args[0], keyword(value, "value_type")
                    values[name] = UNRESOLVED
                    if call_name(argument) == "LaunchConfiguration":
                        declared = self.declared_arguments()[const_str(argument.args[0])]
                        default = const_str(keyword(declared, "default_value"))
                        if default is not None:
                            values[name] = coerce(default, PARAMETER_VALUE_TYPES[value_type.id])
        return values

    def conditions(self, target: ast.Call) -> list[ast.AST]:
        """The ``condition=`` of ``target`` and of every call that contains it, directly or
        through the variable it is assigned to (``monitor = Node(...)``, then
        ``GroupAction([monitor], condition=...)``)."""
        references: list[ast.AST] = [target]
        function = self.enclosing_function(target)
        for stmt in ast.walk(function):
            if isinstance(stmt, ast.Assign) and stmt.value is target:
                names = {t.id for t in stmt.targets if isinstance(t, ast.Name)}
                references += [n for n in ast.walk(function) if isinstance(n, ast.Name)
                               and n.id in names and isinstance(n.ctx, ast.Load)]
        return [condition for call in self.calls
                if (condition := keyword(call, "condition")) is not None
                and any(n is r for n in ast.walk(call) for r in references)]

    def enclosing_function(self, target: ast.AST) -> ast.FunctionDef:
        for function in self.functions.values():
            if any(n is target for n in ast.walk(function)):
                return function
        raise AssertionError("node outside any function")

    def includes(self) -> list[tuple[str, dict[str, ast.AST]]]:
        """(included launch file name, launch arguments) for every call that names a
        ``*.launch.py`` file literally together with a dict of arguments."""
        found = []
        for call in self.calls:
            files = [s for a in call.args if (s := const_str(a)) and s.endswith(".launch.py")]
            dicts = [a for a in call.args if isinstance(a, ast.Dict)]
            if files and dicts:
                found.append((files[0], {const_str(k): v for k, v in zip(dicts[0].keys,
                                                                         dicts[0].values)}))
        return found


def launch_files() -> list[LaunchFile]:
    return [LaunchFile(p) for p in LAUNCH_FILES]


def launch_file(name: str) -> LaunchFile:
    return LaunchFile(REPO / "launch" / name)


def config_parameters(name: str, node_name: str) -> dict:
    """A config file's parameters; its one key must match ``node_name`` in any namespace."""
    data = yaml.safe_load((CONFIG_DIR / name).read_text())
    keys = ("/**", f"/**/{node_name}")
    assert len(data) == 1 and next(iter(data)) in keys, \
        f"{name}: use one of {keys} so that {node_name} in any namespace gets it"
    return next(iter(data.values()))["ros__parameters"]


def launched_nodes() -> list[tuple[LaunchFile, ast.Call]]:
    return [(launch, call) for launch in launch_files() for call in launch.nodes()]


# -- static checks -------------------------------------------------------------------------------


def test_the_three_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"edge.launch.py", "cloud.launch.py",
                                              "split_inference.launch.py"}


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_defines_generate_launch_description(launch):
    top = [n.name for n in launch.tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in top
    function = launch.functions["generate_launch_description"]
    assert not function.args.args, "generate_launch_description takes no arguments"
    returns = [n for n in ast.walk(function) if isinstance(n, ast.Return)]
    assert returns and all(call_name(r.value) == "LaunchDescription" for r in returns)


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_imports_only_real_launch_api(launch):
    for node in ast.walk(launch.tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("launch", "launch_ros"):
            assert node.module in KNOWN_API, f"{launch.path.name}: module {node.module}"
            for alias in node.names:
                assert alias.name in KNOWN_API[node.module], \
                    f"{launch.path.name}: {node.module}.{alias.name} does not exist"
    for call in launch.nodes():
        unknown = {k.arg for k in call.keywords} - NODE_KWARGS
        assert not unknown, f"{launch.path.name}: Node() has no {unknown}"
        assert not call.args, "Node() takes keyword arguments only"
    for call in launch.named("DeclareLaunchArgument"):
        unknown = {k.arg for k in call.keywords} - DECLARE_ARGUMENT_KWARGS
        assert not unknown, f"{launch.path.name}: DeclareLaunchArgument() has no {unknown}"
        choices, default = keyword(call, "choices"), keyword(call, "default_value")
        if choices is not None and const_str(default) is not None:
            assert const_str(default) in ast.literal_eval(choices)
    for call in launch.named("GroupAction"):
        # GroupAction(actions, *, scoped, forwarding, launch_configurations, condition)
        assert len(call.args) == 1, "GroupAction takes one positional argument (the actions)"
        unknown = {k.arg for k in call.keywords} - {"scoped", "forwarding",
                                                    "launch_configurations", "condition"}
        assert not unknown, f"{launch.path.name}: GroupAction() has no {unknown}"
    for call in launch.named("OpaqueFunction"):
        function = const_str(keyword(call, "function")) or getattr(
            keyword(call, "function"), "id", None)
        assert function in launch.functions, "OpaqueFunction(function=...) must be defined here"
        assert launch.functions[function].args.args[0].arg == "context"


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_executables_exist_in_setup_py(launch):
    scripts = console_scripts()
    for call in launch.nodes():
        assert const_str(keyword(call, "package")) == PACKAGE
        executable = launch.executable(call)
        assert executable in scripts, f"{launch.path.name}: no console script {executable!r}"
        assert node_source(executable).is_file()


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_launch_arguments_are_declared_and_used(launch):
    declared, used = set(launch.declared_arguments()), launch.used_configurations()
    assert used <= declared, f"{launch.path.name}: undeclared {used - declared}"
    assert declared <= used, f"{launch.path.name}: declared but unused {declared - used}"


def test_included_files_get_the_arguments_they_declare():
    by_name = {f.path.name: f for f in launch_files()}
    includes = [(f, name, args) for f in by_name.values() for name, args in f.includes()]
    assert {name for _, name, _ in includes} == {"edge.launch.py", "cloud.launch.py",
                                                 "control.launch.py"}
    for parent, name, arguments in includes:
        child = by_name[name]
        passed = set(arguments)
        assert passed <= set(child.declared_arguments()), \
            f"{parent.path.name} passes {passed - set(child.declared_arguments())} to {name}"
        assert child.required_arguments() <= passed, \
            f"{parent.path.name} does not pass {child.required_arguments() - passed} to {name}"


@pytest.mark.parametrize("parent", [f for f in launch_files() if f.includes()],
                         ids=lambda f: f.path.name)
def test_shared_arguments_agree_with_the_included_files(parent):
    """An argument a parent declares and passes on has the child's default and choices, so
    that ``ros2 launch --show-args`` on either file tells the same story."""
    declared = parent.declared_arguments()
    for name, arguments in parent.includes():
        child = launch_file(name).declared_arguments()
        for argument, value in arguments.items():
            if call_name(value) != "LaunchConfiguration" or argument not in declared:
                continue
            assert const_str(value.args[0]) == argument, f"{argument} passed under another name"
            for field in ("default_value", "choices"):
                ours, theirs = keyword(declared[argument], field), keyword(child[argument], field)
                assert (ours is None) == (theirs is None), f"{argument}: {field} differs"
                if ours is not None:
                    assert ast.dump(ours) == ast.dump(theirs), f"{argument}: {field} differs " \
                                                               f"from {name}'s"


def test_split_inference_brings_up_the_whole_adaptive_graph():
    by_name = {f.path.name: f for f in launch_files()}

    def executables(launch: LaunchFile) -> set[str]:
        found = {launch.executable(c) for c in launch.nodes()}
        for name, _ in launch.includes():
            found |= executables(by_name[name])
        return found

    assert executables(by_name["split_inference.launch.py"]) == GRAPH_EXECUTABLES
    edge_includes = [args for name, args in by_name["split_inference.launch.py"].includes()
                     if name == "edge.launch.py"]
    assert edge_includes and all("namespace" in args and "adaptive" in args
                                 for args in edge_includes)


def expression(source: str) -> str:
    return ast.dump(ast.parse(source, mode="eval").body)


def included(launch: LaunchFile, name: str) -> dict[str, ast.AST]:
    """The arguments ``launch`` passes to the one include of ``name``."""
    found = [arguments for file, arguments in launch.includes() if file == name]
    assert len(found) == 1, f"{launch.path.name} includes {name} {len(found)} times"
    return found[0]


def namespace_of(launch: LaunchFile, node: ast.Call) -> str:
    """A Node's ``namespace=``, through a variable assigned in the same function."""
    value = keyword(node, "namespace")
    assert value is not None, f"{launch.path.name}: {launch.executable(node)} has no namespace"
    if isinstance(value, ast.Name):
        value = next(n.value for n in ast.walk(launch.enclosing_function(node))
                     if isinstance(n, ast.Assign) and any(
                         isinstance(t, ast.Name) and t.id == value.id for t in n.targets))
    return ast.dump(value)


def include_call(launch: LaunchFile, name: str) -> ast.Call:
    return next(c for c in launch.calls if any(const_str(a) == name for a in c.args))


def test_each_robot_gets_a_monitor_and_a_scheduler_for_its_edge():
    """edge.launch.py: the edge and the prober in the robot's namespace, and the control plane
    (control.launch.py) in the same namespace, for the same bundle, addressing that edge by
    the name it is launched under; the prober and control plane start unless ``adaptive`` is
    false, the control plane only with ``control_side:=robot`` (the default); the edge
    always."""
    launch, control = launch_file("edge.launch.py"), launch_file("control.launch.py")
    nodes = {launch.executable(c): c for c in launch.nodes()}
    assert set(nodes) == ROBOT_EXECUTABLES
    robot_namespace = expression('LaunchConfiguration("namespace")')
    assert {namespace_of(launch, c) for c in nodes.values()} == {robot_namespace}
    arguments = included(launch, "control.launch.py")
    assert ast.dump(arguments["namespace"]) in (robot_namespace, expression("namespace"))
    assert ast.dump(arguments["bundle"]) == expression('LaunchConfiguration("bundle")')
    edge_name = launch.node_name(nodes["edge_node"])
    assert launch.literal(arguments["edge_node"]) == edge_name, "the scheduler sets this edge"
    assert launch.conditions(nodes["edge_node"]) == []
    adaptive = expression('IfCondition(LaunchConfiguration("adaptive"))')
    assert [ast.dump(c) for c in launch.conditions(nodes["link_prober"])] == [adaptive]
    on_the_robot = expression('IfCondition(AndSubstitution(LaunchConfiguration("adaptive"), '
                              'EqualsSubstitution(LaunchConfiguration("control_side"), '
                              '"robot")))')
    assert [ast.dump(c) for c in launch.conditions(include_call(launch, "control.launch.py"))] \
        == [on_the_robot]
    for name in ("adaptive", "control_side"):
        default = keyword(launch.declared_arguments()[name], "default_value")
        assert const_str(default) == {"adaptive": "true", "control_side": "robot"}[name]

    control_nodes = {control.executable(c): c for c in control.nodes()}
    assert set(control_nodes) == CONTROL_EXECUTABLES
    assert {namespace_of(control, c) for c in control_nodes.values()} == {robot_namespace}
    scheduler = control_nodes["scheduler"]
    target = control.launch_values(scheduler)["edge_node"]
    assert target == edge_name, "the default names the edge edge.launch.py starts"
    assert not target.startswith("/"), "relative: the edge in the scheduler's own namespace"
    assert any(const_str(k) == "bundle" and ast.dump(v) == expression(
        'ParameterValue(LaunchConfiguration("bundle"), value_type=str)')
        for d in control.parameter_dicts(scheduler) for k, v in zip(d.keys, d.values))
    assert all(control.conditions(c) == [] for c in control_nodes.values())


def test_the_server_starts_each_robot_s_control_plane_when_asked():
    """cloud.launch.py with ``control_side:=server``: one control.launch.py per robot
    namespace (the cloud's own namespace without robots), with the cloud's bundle; with
    ``control_side:=robot`` (the default) none, so that no robot gets two schedulers."""
    cloud = launch_file("cloud.launch.py")
    arguments = included(cloud, "control.launch.py")
    assert ast.dump(arguments["namespace"]) == expression(
        'robot or LaunchConfiguration("namespace")')
    assert ast.dump(arguments["bundle"]) == expression('LaunchConfiguration("bundle")')
    call = include_call(cloud, "control.launch.py")
    comprehension = next(n for n in ast.walk(cloud.functions["cloud_node"])
                         if isinstance(n, ast.ListComp) and n.elt is call)
    assert ast.dump(comprehension.generators[0].iter) == expression('namespaces or [""]')
    guards = [n for n in ast.walk(cloud.functions["cloud_node"]) if isinstance(n, ast.If)
              and any(m is call for m in ast.walk(n))]
    assert [ast.dump(g.test) for g in guards] == [expression(
        'LaunchConfiguration("control_side").perform(context) == "server" and '
        'LaunchConfiguration("adaptive").perform(context).lower() in ("true", "1")')]
    declared = cloud.declared_arguments()["control_side"]
    assert const_str(keyword(declared, "default_value")) == "robot"
    assert ast.literal_eval(keyword(declared, "choices")) == ["robot", "server"]
    for name in ("objective", "frame_rate", "override"):
        assert ast.dump(arguments[name]) == expression(f'LaunchConfiguration("{name}")')


def test_the_one_host_graph_passes_the_control_side_to_both_sides():
    graph = launch_file("split_inference.launch.py")
    for name in ("edge.launch.py", "cloud.launch.py"):
        for argument in ("control_side", "adaptive"):  # adaptive:=false starts no scheduler
            assert ast.dump(included(graph, name)[argument]) == expression(
                f'LaunchConfiguration("{argument}")')


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_objective_choices_are_the_policys(launch):
    from split_infer.adaptation.policy import OBJECTIVES

    argument = launch.declared_arguments().get("objective")
    if argument is None:
        return
    assert ast.literal_eval(keyword(argument, "choices")) == list(OBJECTIVES)


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_bundle_defaults_to_the_installed_default_bundle(launch):
    argument = launch.declared_arguments()["bundle"]
    default = keyword(argument, "default_value")
    assert call_name(default) == "PathJoinSubstitution", "default: the package's share bundle"
    package, *parts = default.args[0].elts
    assert call_name(package) == "FindPackageShare" and const_str(package.args[0]) == PACKAGE
    assert "/".join(f"share/{PACKAGE}/{const_str(p)}" if i == 0 else const_str(p)
                    for i, p in enumerate(parts)) == DEFAULT_BUNDLE_SHARE


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_remappings_name_topics_the_node_subscribes(launch):
    for call in launch.nodes():
        remappings = keyword(call, "remappings")
        if remappings is None:
            continue
        topics = subscribed_topics(node_source(launch.executable(call)))
        for rule in remappings.elts:
            assert const_str(rule.elts[0]) in topics, f"remapping of unknown topic in " \
                                                      f"{launch.path.name}"


def test_every_config_file_is_loaded_by_a_node():
    referenced = {name for launch, call in launched_nodes()
                  for name in launch.config_files(call)}
    assert referenced == {p.name for p in CONFIG_DIR.glob("*.yaml")}


# -- setup.py ------------------------------------------------------------------------------------


def run_setup(directory: Path, monkeypatch) -> dict:
    """setup.py's keyword arguments when run in ``directory`` (setuptools.setup captured)."""
    import setuptools

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(directory)
    runpy.run_path(str(REPO / "setup.py"))
    assert captured, "setup.py did not call setup()"
    return captured


def test_setup_installs_the_launch_and_config_files(monkeypatch):
    installed = {os.path.join(target, os.path.basename(f)): f
                 for target, files in run_setup(REPO, monkeypatch)["data_files"]
                 for f in files}
    for path in [*LAUNCH_FILES, *CONFIG_DIR.glob("*.yaml")]:
        relative = path.relative_to(REPO).as_posix()
        assert installed.get(f"share/{PACKAGE}/{relative}") == relative
    for target, source in installed.items():
        assert (REPO / source).is_file(), f"{target}: {source} is not a file"


@pytest.mark.parametrize("layout", ["absent", "empty"])
def test_setup_works_without_a_default_bundle(layout, tmp_path, monkeypatch):
    if layout == "empty":
        (tmp_path / DEFAULT_BUNDLE_SOURCE).mkdir(parents=True)
    data_files = run_setup(tmp_path, monkeypatch)["data_files"]
    assert not [t for t, _ in data_files if t.startswith(DEFAULT_BUNDLE_SHARE)]


def test_setup_installs_the_default_bundle_as_share_data(measured_bundle, tmp_path, monkeypatch):
    """With a real bundle (weights/, onnx/, calibration/) as the package's default bundle, the
    share copy setup.py installs keeps the layout and loads verified (every listed file
    present with its hash, nothing unlisted)."""
    from split_infer.bundle import Bundle

    source = tmp_path / "src"
    shutil.copytree(measured_bundle.path, source / DEFAULT_BUNDLE_SOURCE)
    (source / DEFAULT_BUNDLE_SOURCE / "onnx" / "extra").mkdir()
    (source / DEFAULT_BUNDLE_SOURCE / "onnx" / "extra" / "deeper.bin").write_bytes(b"x")
    data_files = run_setup(source, monkeypatch)["data_files"]
    targets = [t for t, _ in data_files]
    assert len(targets) == len(set(targets)), "one data_files entry per target directory"
    prefix = tmp_path / "prefix"
    for target, entries in data_files:
        assert not os.path.isabs(target) and not any(os.path.isabs(e) for e in entries)
        if target.startswith(DEFAULT_BUNDLE_SHARE):
            for entry in entries:  # what setuptools' install_data does with an entry
                (prefix / target).mkdir(parents=True, exist_ok=True)
                shutil.copy(source / entry, prefix / target)
    installed = prefix / DEFAULT_BUNDLE_SHARE
    assert (installed / "onnx" / "extra" / "deeper.bin").read_bytes() == b"x"
    (installed / "onnx" / "extra" / "deeper.bin").unlink()  # not the bundle's: it is refused
    bundle = Bundle.load(installed)
    assert {"weights", "onnx", "calibration"} <= {p.name for p in installed.iterdir()}
    assert bundle.manifest["files"] == measured_bundle.manifest["files"]


# -- against instantiated nodes ------------------------------------------------------------------


def node_class(executable: str):
    """The one rclpy Node subclass the executable's module defines."""
    import importlib
    import inspect

    from rclpy.node import Node

    module = importlib.import_module(console_scripts()[executable].partition(":")[0])
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Node) and c is not Node and c.__module__ == module.__name__]
    assert len(classes) == 1, f"{module.__name__}: one node class per module, got {classes}"
    return classes[0]


@pytest.fixture(scope="module")
def measured_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with measured numbers filled in, which the scheduler needs."""
    return with_measurements(tiny_bundle, tmp_path_factory.mktemp("measured") / "bundle",
                             lambda c: {"accuracy": 0.5, "bytes_per_frame": 100.0 * c.ratio,
                                        "edge_ms": 1.0, "cloud_ms": 1.0})


@pytest.fixture(scope="module")
def ros_module_context():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id())
    try:
        yield context
    finally:
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def declared_parameters(ros_module_context, measured_bundle) -> dict[str, dict[str, type]]:
    """executable → {parameter name: type} as the instantiated node declares them (some nodes
    declare in loops over tables, so the names cannot be read from the source)."""
    from rclpy.parameter import Parameter

    declared = {}
    for executable in {launch.executable(call) for launch, call in launched_nodes()}:
        node = node_class(executable)(
            context=ros_module_context,
            parameter_overrides=[Parameter("bundle", value=str(measured_bundle.path))])
        try:
            declared[executable] = {name: type(p.value) for name, p in node._parameters.items()}
        finally:
            node.destroy_node()
    return declared


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_node_parameters_and_configs_are_declared_by_the_node(launch, declared_parameters):
    for call in launch.nodes():
        executable = launch.executable(call)
        declared = set(declared_parameters[executable])
        launch_keys = set()
        for params in launch.parameter_dicts(call):
            for key, value in zip(params.keys, params.values):
                name = const_str(key)
                assert name in declared, f"{launch.path.name}: {executable} has no {name!r}"
                launch_keys.add(name)
                # Launch parses a bare substitution as YAML ("8" → int, a numeric path →
                # number): anything from a launch argument must be typed explicitly.
                assert call_name(value) != "LaunchConfiguration", \
                    f"{launch.path.name}: wrap {name!r} in ParameterValue(..., value_type=)"
        for config in launch.config_files(call):
            keys = set(config_parameters(config, launch.node_name(call)))
            assert keys <= declared, f"{config}: {executable} has no {keys - declared}"
            # The dict comes after the file and wins: a key in both would silently
            # make the file's value dead.
            assert not keys & launch_keys, f"{config} and {launch.path.name} both set " \
                                           f"{keys & launch_keys}"


@pytest.mark.parametrize(("launch", "call"), launched_nodes(),
                         ids=[f"{f.path.name}:{f.executable(c)}" for f, c in launched_nodes()])
def test_nodes_take_what_the_launch_file_gives_them(launch, call, ros_module_context,
                                                    measured_bundle, tmp_path):
    """Start the node as launch_ros would with the default launch arguments (the bundle
    replaced by a test bundle): name and namespace remapped, the config file, then the launch
    file's values keyed by the node's full name. It must come up with exactly those values,
    of the declared types."""
    executable, name, namespace = launch.executable(call), launch.node_name(call), "/r1"
    values = {k: v for k, v in launch.launch_values(call).items() if v is not UNRESOLVED}
    if "bundle" in launch.launch_values(call):
        values["bundle"] = str(measured_bundle.path)
    launch_yaml = tmp_path / "launch_params.yaml"
    launch_yaml.write_text(yaml.dump({f"{namespace}/{name}": {"ros__parameters": values}}))
    configs = launch.config_files(call)
    cli_args = ["--ros-args", "-r", f"__node:={name}", "-r", f"__ns:={namespace}"]
    for config in configs:
        cli_args += ["--params-file", str(CONFIG_DIR / config)]
    cli_args += ["--params-file", str(launch_yaml)]
    expected = {}
    for config in configs:
        expected.update(config_parameters(config, name))
    expected.update(values)

    node = node_class(executable)(context=ros_module_context, cli_args=cli_args)
    try:
        assert node.get_fully_qualified_name() == f"{namespace}/{name}"
        for key, value in expected.items():
            actual = node.get_parameter(key).value
            assert type(actual) is type(value), \
                f"{executable}.{key}: {actual!r}, launch/config give {value!r}"
            if key not in RESOLVED_BY_NODE.get(executable, ()):
                assert actual == value, \
                    f"{executable}.{key}: {actual!r}, launch/config give {value!r}"
        if executable == "scheduler":
            assert node.loop is not None, "the scheduler found no usable bundle"
    finally:
        node.destroy_node()
