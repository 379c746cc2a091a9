"""Static checks of the launch files and their YAML configs (``launch`` cannot run here).

The launch files are parsed with ``ast`` and checked against the real nodes: executables
exist in setup.py, every parameter a launch file or config file sets is one the node
declares (names extracted from the node source, and the extraction itself checked against
instantiated nodes), values typed where launch would otherwise guess, launch arguments
declared where used and passed where included, and only launch/launch_ros API that exists
(the names below were read from ros2/launch and ros2/launch_ros).
"""

import ast
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter
from ros_fixtures import ros_context_fixture, tiny_bundle_fixture  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIG_DIR = REPO / "config"

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
# Parameters every rclpy node has, never declared by our code.
IMPLICIT_PARAMETERS = {"use_sim_time", "start_type_description_service"}


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


def declared_parameters(source: Path) -> set[str]:
    """Parameter names a node module declares: the first string argument of every
    ``declare_*(...)`` helper call or ``declare_parameter(...)`` call."""
    names = set()
    for call in ast.walk(ast.parse(source.read_text())):
        name = call_name(call)
        if name and name.startswith("declare_"):
            first = next((const_str(a) for a in call.args if const_str(a) is not None), None)
            assert first is not None, f"{source.name}:{call.lineno}: parameter name not literal"
            names.add(first)
    return names


def subscribed_topics(source: Path) -> set[str]:
    """Literal topic names the node module subscribes to."""
    topics = set()
    for call in ast.walk(ast.parse(source.read_text())):
        if call_name(call) == "create_subscription" and len(call.args) >= 2:
            topic = const_str(call.args[1])
            if topic is not None:
                topics.add(topic)
    return topics


class LaunchFile:
    """What a launch file declares, uses and passes, from its syntax tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.calls = [c for c in ast.walk(self.tree) if isinstance(c, ast.Call)]
        self.functions = {f.name: f for f in ast.walk(self.tree)
                          if isinstance(f, ast.FunctionDef)}

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

    def parameter_dicts(self, node: ast.Call) -> list[ast.Dict]:
        """Dict literals a Node gets in ``parameters``, following a list variable built in
        the same function (``params = [...]`` then ``params.append({...})``)."""
        value = keyword(node, "parameters")
        if value is None:
            return []
        elements: list[ast.AST] = []
        if isinstance(value, ast.List):
            elements = list(value.elts)
        elif isinstance(value, ast.Name):
            function = self.enclosing_function(node)
            for stmt in ast.walk(function):
                if isinstance(stmt, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == value.id for t in stmt.targets):
                    assert isinstance(stmt.value, ast.List), "parameters must be a list"
                    elements.extend(stmt.value.elts)
                if (isinstance(stmt, ast.Call) and call_name(stmt) == "append"
                        and isinstance(stmt.func.value, ast.Name)
                        and stmt.func.value.id == value.id):
                    elements.extend(stmt.args)
        else:
            raise AssertionError(f"{self.path.name}: unsupported parameters expression")
        return [e for e in elements if isinstance(e, ast.Dict)]

    def enclosing_function(self, target: ast.AST) -> ast.FunctionDef:
        for function in self.functions.values():
            if any(n is target for n in ast.walk(function)):
                return function
        raise AssertionError("node outside any function")

    def yaml_files(self) -> set[str]:
        return {s for c in self.calls for a in ast.walk(c)
                if (s := const_str(a)) is not None and s.endswith(".yaml")}

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


def config_parameters(name: str) -> dict:
    data = yaml.safe_load((CONFIG_DIR / name).read_text())
    assert list(data) == ["/**"], f"{name}: use the '/**' wildcard so any namespace works"
    return data["/**"]["ros__parameters"]


# -- tests ---------------------------------------------------------------------------------------


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
    for call in launch.named("OpaqueFunction"):
        function = const_str(keyword(call, "function")) or getattr(
            keyword(call, "function"), "id", None)
        assert function in launch.functions, "OpaqueFunction(function=...) must be defined here"
        assert launch.functions[function].args.args[0].arg == "context"


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_executables_exist_in_setup_py(launch):
    scripts = console_scripts()
    for call in launch.nodes():
        assert const_str(keyword(call, "package")) == "split_infer"
        executable = const_str(keyword(call, "executable"))
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
    assert {name for _, name, _ in includes} == {"edge.launch.py", "cloud.launch.py"}
    for parent, name, arguments in includes:
        child = by_name[name]
        passed = set(arguments)
        assert passed <= set(child.declared_arguments()), \
            f"{parent.path.name} passes {passed - set(child.declared_arguments())} to {name}"
        assert child.required_arguments() <= passed, \
            f"{parent.path.name} does not pass {child.required_arguments() - passed} to {name}"


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_node_parameters_and_configs_are_declared_by_the_node(launch):
    for call in launch.nodes():
        source = node_source(const_str(keyword(call, "executable")))
        declared = declared_parameters(source)
        launch_keys = set()
        for params in launch.parameter_dicts(call):
            for key, value in zip(params.keys, params.values):
                name = const_str(key)
                assert name in declared, f"{launch.path.name}: {source.stem} has no {name!r}"
                launch_keys.add(name)
                # Launch parses a bare substitution as YAML ("8" → int, a numeric path →
                # number): anything from a launch argument must be typed explicitly.
                assert call_name(value) != "LaunchConfiguration", \
                    f"{launch.path.name}: wrap {name!r} in ParameterValue(..., value_type=)"
        for config in launch.yaml_files():
            keys = set(config_parameters(config))
            assert keys <= declared, f"{config}: {source.stem} has no {keys - declared}"
            # The dict comes after the file and wins: a key in both would silently
            # make the file's value dead.
            assert not keys & launch_keys, f"{config} and {launch.path.name} both set " \
                                           f"{keys & launch_keys}"


@pytest.mark.parametrize("launch", launch_files(), ids=lambda f: f.path.name)
def test_remappings_name_topics_the_node_subscribes(launch):
    for call in launch.nodes():
        remappings = keyword(call, "remappings")
        if remappings is None:
            continue
        topics = subscribed_topics(node_source(const_str(keyword(call, "executable"))))
        for rule in remappings.elts:
            assert const_str(rule.elts[0]) in topics, f"remapping of unknown topic in " \
                                                      f"{launch.path.name}"


def test_config_files_exist_and_are_loaded():
    referenced = set().union(*(f.yaml_files() for f in launch_files()))
    assert referenced >= {"edge.yaml", "cloud.yaml"}
    for name in referenced:
        assert (CONFIG_DIR / name).is_file(), f"a launch file loads missing config/{name}"


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


@pytest.mark.parametrize(("executable", "config"), [("edge_node", "edge.yaml"),
                                                    ("cloud_node", "cloud.yaml")])
def test_extraction_and_configs_against_real_nodes(executable, config, ros_context,
                                                   tiny_bundle):
    """The AST extraction finds exactly what the node declares; the YAML config (with its
    value types) is accepted by the node; launch-typed values match the declared types."""
    overrides = [Parameter("bundle", value=str(tiny_bundle.path))]
    overrides += [Parameter(k, value=v) for k, v in config_parameters(config).items()]
    node = node_class(executable)(context=ros_context, parameter_overrides=overrides)
    try:
        actual = set(node._parameters) - IMPLICIT_PARAMETERS
        assert declared_parameters(node_source(executable)) == actual
        for name, value in config_parameters(config).items():
            assert node.get_parameter(name).value == value
        types = {name: type(node.get_parameter(name).value) for name in actual}
    finally:
        node.destroy_node()
    for launch in launch_files():
        for call in launch.nodes():
            if const_str(keyword(call, "executable")) != executable:
                continue
            for params in launch.parameter_dicts(call):
                for key, value in zip(params.keys, params.values):
                    if call_name(value) == "ParameterValue":
                        value_type = keyword(value, "value_type")
                        assert PARAMETER_VALUE_TYPES[value_type.id] is types[const_str(key)]
