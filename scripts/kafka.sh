#!/usr/bin/env bash
# Fetch, start and stop a single-node Apache Kafka broker (KRaft mode) on 127.0.0.1
# for local runs and tests. Run `scripts/kafka.sh help` for commands and settings.
set -euo pipefail

readonly SCRIPT_NAME="kafka.sh"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT

readonly DEFAULT_KAFKA_VERSION="4.1.1"
readonly SCALA_VERSION="2.13"
# Kafka logs through SLF4J. These jars route SLF4J to Log4j 2, which reads LOG4J_CONFIG.
readonly LOG4J_VERSION="2.25.3"
readonly SLF4J_VERSION="2.0.17"
# Its plugin.xml sets requiredMavenVersion 3.6.3, so fetch needs Maven 3.6.3 or newer.
readonly DEPENDENCY_PLUGIN_VERSION="3.8.1"
readonly MIN_JAVA_MAJOR=17

readonly LOG4J_CONFIG="$REPO_ROOT/config/kafka/log4j2.yaml"
# KafkaRaftServer logs this line at INFO once the broker and controller have started
# (checked with Kafka 4.1.1).
readonly STARTED_LOG_LINE="Kafka Server started"
# Start of the first line of every server.properties this script writes. `reset`
# deletes only a data folder whose server.properties starts with it.
readonly PROPERTIES_MARKER="# Written by scripts/kafka.sh"

usage() {
  cat <<'EOF'
Usage: scripts/kafka.sh COMMAND

Runs a single-node Apache Kafka broker in KRaft mode (broker and controller in one
JVM) that listens on 127.0.0.1 only, for local runs and tests.

Commands:
  fetch   Resolve the Kafka jars from Maven Central into the cache folder.
          Does nothing when they are already cached. Needs java and mvn.
  start   Fetch if needed, write server.properties, format the storage on first
          use, start the broker in the background and wait until it accepts
          connections. Does nothing when the broker of this data folder runs.
  stop    Stop the broker of this data folder with SIGTERM, and with SIGKILL if
          it has not exited after KAFKA_STOP_TIMEOUT.
  status  Print whether the broker of this data folder runs.
  reset   Stop the broker, then delete the data folder with all topics.
  help    Print this message.

Settings (environment variables):
  KAFKA_VERSION          Apache Kafka release to run (default: 4.1.1).
  KAFKA_PORT             Client (PLAINTEXT) listener port (default: 9092).
  KAFKA_CONTROLLER_PORT  KRaft controller listener port (default: KAFKA_PORT + 1).
  KAFKA_DATA_DIR         Folder for server.properties, the storage (log.dirs),
                         kafka.pid and kafka.log (default: .run/kafka-$KAFKA_PORT
                         under the repository root). A relative path is taken
                         relative to the current directory.
  MITIGATE_CACHE_DIR     Cache folder. The jars go to
                         $MITIGATE_CACHE_DIR/kafka-$KAFKA_VERSION/libs
                         (default: $HOME/.cache/mitigate).
  KAFKA_HEAP             JVM heap options of the broker (default: -Xms256m -Xmx768m).
  KAFKA_START_TIMEOUT    Seconds that start waits for the broker (default: 90).
  KAFKA_STOP_TIMEOUT     Seconds that stop waits after SIGTERM before it sends
                         SIGKILL (default: 30).

Requirements: Java 17 or newer (java), and Maven 3.6.3 or newer (mvn) for fetch.
On Debian or Ubuntu: apt-get install openjdk-17-jre-headless maven

Exit status: 0 on success; 1 on failure, and for status when no broker runs;
2 for an invalid command or setting.
EOF
}

log() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$*"
}

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

die_usage() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  printf "Run 'scripts/kafka.sh help' for usage.\n" >&2
  exit 2
}

# Temporary folders to delete when the script exits, also after an error or Ctrl-C.
TEMP_PATHS=()

remove_temp_paths() {
  local path
  for path in ${TEMP_PATHS[@]+"${TEMP_PATHS[@]}"}; do
    rm -rf -- "$path"
  done
}

trap remove_temp_paths EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Settings

is_port() {
  [[ $1 =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535))
}

is_positive_integer() {
  [[ $1 =~ ^[1-9][0-9]{0,5}$ ]]
}

load_settings() {
  KAFKA_VERSION="${KAFKA_VERSION:-$DEFAULT_KAFKA_VERSION}"
  # The version goes into a pom and into paths, so accept only version-like strings.
  if [[ ! $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([.-][A-Za-z0-9]+)*$ ]]; then
    die_usage "invalid KAFKA_VERSION '$KAFKA_VERSION': expected a release number such as $DEFAULT_KAFKA_VERSION"
  fi

  KAFKA_PORT="${KAFKA_PORT:-9092}"
  if ! is_port "$KAFKA_PORT"; then
    die_usage "invalid KAFKA_PORT '$KAFKA_PORT': expected a port number from 1 to 65535"
  fi
  KAFKA_PORT=$((10#$KAFKA_PORT))

  KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
  if ! is_port "$KAFKA_CONTROLLER_PORT"; then
    die_usage "invalid KAFKA_CONTROLLER_PORT '$KAFKA_CONTROLLER_PORT': expected a port number from 1 to 65535"
  fi
  KAFKA_CONTROLLER_PORT=$((10#$KAFKA_CONTROLLER_PORT))
  if ((KAFKA_CONTROLLER_PORT == KAFKA_PORT)); then
    die_usage "KAFKA_CONTROLLER_PORT must differ from KAFKA_PORT (both are $KAFKA_PORT)"
  fi

  KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$REPO_ROOT/.run/kafka-$KAFKA_PORT}"
  if [[ $KAFKA_DATA_DIR != /* ]]; then
    KAFKA_DATA_DIR="$PWD/$KAFKA_DATA_DIR"
  fi
  KAFKA_DATA_DIR="${KAFKA_DATA_DIR%/}"
  if [[ -z $KAFKA_DATA_DIR ]]; then
    die_usage "invalid KAFKA_DATA_DIR '/': choose a folder that only this broker uses"
  fi

  MITIGATE_CACHE_DIR="${MITIGATE_CACHE_DIR:-$HOME/.cache/mitigate}"
  KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx768m}"

  KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
  if ! is_positive_integer "$KAFKA_START_TIMEOUT"; then
    die_usage "invalid KAFKA_START_TIMEOUT '$KAFKA_START_TIMEOUT': expected a whole number of seconds greater than 0"
  fi
  KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
  if ! is_positive_integer "$KAFKA_STOP_TIMEOUT"; then
    die_usage "invalid KAFKA_STOP_TIMEOUT '$KAFKA_STOP_TIMEOUT': expected a whole number of seconds greater than 0"
  fi

  LIBS_DIR="$MITIGATE_CACHE_DIR/kafka-$KAFKA_VERSION/libs"
  # The main Kafka jar. Its presence marks a complete fetch because fetch moves the
  # libs folder into place only after Maven has succeeded.
  KAFKA_JAR="$LIBS_DIR/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar"
  PROPERTIES_FILE="$KAFKA_DATA_DIR/server.properties"
  STORAGE_DIR="$KAFKA_DATA_DIR/storage"
  PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
  LOG_FILE="$KAFKA_DATA_DIR/kafka.log"
}

# ---------------------------------------------------------------------------
# Required tools

require_java() {
  if ! command -v java >/dev/null 2>&1; then
    die "java not found on PATH. Install Java $MIN_JAVA_MAJOR or newer, for example the Debian package openjdk-17-jre-headless."
  fi

  # The line looks like: openjdk version "17.0.15" 2025-04-15 (or "1.8.0_392" before Java 9).
  local version_line version major
  version_line="$(java -version 2>&1 | grep -m 1 ' version "' || true)"
  version="${version_line#*\"}"
  version="${version%%\"*}"
  if [[ $version == 1.* ]]; then
    version="${version#1.}"
  fi
  major="${version%%[!0-9]*}"
  if [[ -z $major ]]; then
    die "could not read the Java version from 'java -version'. Install Java $MIN_JAVA_MAJOR or newer, for example the Debian package openjdk-17-jre-headless."
  fi
  if ((major < MIN_JAVA_MAJOR)); then
    die "Java $major found at $(command -v java), but Kafka $KAFKA_VERSION needs Java $MIN_JAVA_MAJOR or newer. Install for example the Debian package openjdk-17-jre-headless and put it first on PATH."
  fi
}

require_maven() {
  if ! command -v mvn >/dev/null 2>&1; then
    die "mvn not found on PATH, and it is needed to fetch Kafka $KAFKA_VERSION. Install Maven 3.6.3 or newer, for example the Debian package maven."
  fi
}

# ---------------------------------------------------------------------------
# fetch

write_pom() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh to resolve the jars of a local Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.mitigate</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>$DEPENDENCY_PLUGIN_VERSION</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
EOF
}

cmd_fetch() {
  if [[ -f $KAFKA_JAR ]]; then
    log "Kafka $KAFKA_VERSION is already in $LIBS_DIR"
    return 0
  fi
  require_java
  require_maven

  local pom_dir staging_dir
  pom_dir="$(mktemp -d "${TMPDIR:-/tmp}/mitigate-kafka-pom.XXXXXX")"
  TEMP_PATHS+=("$pom_dir")
  # Maven copies into a staging folder in the cache folder, so that the final `mv`
  # is a rename on one file system and a failure leaves no half-filled libs folder.
  mkdir -p "$MITIGATE_CACHE_DIR"
  staging_dir="$(mktemp -d "$MITIGATE_CACHE_DIR/.kafka-$KAFKA_VERSION-partial.XXXXXX")"
  TEMP_PATHS+=("$staging_dir")

  write_pom >"$pom_dir/pom.xml"
  log "resolving Kafka $KAFKA_VERSION (Scala $SCALA_VERSION) with Maven into $LIBS_DIR"
  # Maven's output is printed only on failure. With -q it contains only the errors,
  # and on success only stray terminal escape codes (seen with Maven 3.8.7).
  local maven_output
  if ! maven_output="$(mvn -q -B -f "$pom_dir/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$staging_dir/libs" -DincludeScope=runtime 2>&1)"; then
    printf '%s\n' "${maven_output//$'\e'\[0m/}" >&2
    die "Maven failed to resolve org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION (see the Maven output above). Check KAFKA_VERSION and the access to Maven Central. Nothing was written to $LIBS_DIR."
  fi
  if [[ ! -f "$staging_dir/libs/$(basename "$KAFKA_JAR")" ]]; then
    die "Maven finished, but $(basename "$KAFKA_JAR") is missing from its output. Nothing was written to $LIBS_DIR."
  fi

  # A libs folder without the Kafka jar was not made by a complete fetch.
  rm -rf -- "$LIBS_DIR"
  mkdir -p "$(dirname "$LIBS_DIR")"
  mv -- "$staging_dir/libs" "$LIBS_DIR"
  local jar_count
  jar_count="$(find "$LIBS_DIR" -name '*.jar' | wc -l | tr -d ' ')"
  log "fetched $jar_count jars into $LIBS_DIR"
}

# ---------------------------------------------------------------------------
# Broker process

# Succeeds when the process with this pid is the broker of this data folder. The
# command-line check protects against a pid that the system reused for another
# process after the broker died, and it treats an exited (zombie) broker as gone.
is_broker_process() {
  local pid="$1" command_line
  command_line="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
  [[ $command_line == *kafka.Kafka*"$PROPERTIES_FILE"* ]]
}

# Prints the pid of the running broker of this data folder, or fails when none runs.
find_broker_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid
  pid="$(<"$PID_FILE")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_broker_process "$pid" || return 1
  printf '%s\n' "$pid"
}

port_accepts_connections() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits until the broker process has exited. Fails after the timeout in seconds.
wait_for_exit() {
  local pid="$1" timeout="$2"
  local deadline=$((SECONDS + timeout))
  while is_broker_process "$pid"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.5
  done
}

# Stops the broker with SIGTERM, which makes Kafka shut down cleanly, and with
# SIGKILL after KAFKA_STOP_TIMEOUT.
stop_broker_process() {
  local pid="$1"
  log "stopping the broker (pid $pid) with SIGTERM"
  kill -TERM "$pid" 2>/dev/null || true
  if wait_for_exit "$pid" "$KAFKA_STOP_TIMEOUT"; then
    return 0
  fi

  log "the broker did not exit within ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  if ! wait_for_exit "$pid" 10; then
    die "the broker (pid $pid) is still running 10s after SIGKILL"
  fi
}

# Sets JAVA_COMMAND to java with the Kafka classpath and the Log4j configuration.
init_java_command() {
  JAVA_COMMAND=(java "-Dlog4j2.configurationFile=$LOG4J_CONFIG" -cp "$LIBS_DIR/*")
}

# ---------------------------------------------------------------------------
# start

write_server_properties() {
  cat >"$PROPERTIES_FILE" <<EOF
$PROPERTIES_MARKER, which rewrites it on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$STORAGE_DIR
auto.create.topics.enable=false
# A single broker cannot hold more than one replica of the internal topics.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Let the first consumer group member start at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
EOF
}

# Formats the KRaft storage with a new cluster id. With controller.quorum.voters
# set, StorageTool rejects --standalone, so it is not passed.
format_storage() {
  local cluster_id output
  init_java_command
  log "formatting the KRaft storage in $STORAGE_DIR"
  if ! cluster_id="$("${JAVA_COMMAND[@]}" kafka.tools.StorageTool random-uuid 2>&1)"; then
    die "kafka.tools.StorageTool random-uuid failed: $cluster_id"
  fi
  if [[ ! $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]]; then
    die "kafka.tools.StorageTool random-uuid returned no valid cluster id: $cluster_id"
  fi
  if ! output="$("${JAVA_COMMAND[@]}" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$PROPERTIES_FILE" 2>&1)"; then
    die "formatting the storage in $STORAGE_DIR failed: $output"
  fi
}

# Starts the broker in the background and writes its pid to PID_FILE.
launch_broker() {
  local heap_options=()
  read -r -a heap_options <<<"$KAFKA_HEAP"
  init_java_command
  JAVA_COMMAND+=(${heap_options[@]+"${heap_options[@]}"} -XX:+UseG1GC -Djava.awt.headless=true
    kafka.Kafka "$PROPERTIES_FILE")

  : >"$LOG_FILE"
  # The subshell runs in the data folder, so that JVM crash files (hs_err_pid*.log)
  # land there. setsid gives the broker its own session, so that Ctrl-C or closing
  # the terminal does not stop it. A background child of a non-interactive shell is
  # no process group leader, so setsid execs java without forking and $! is its pid.
  if command -v setsid >/dev/null 2>&1; then
    (cd "$KAFKA_DATA_DIR" && exec setsid "${JAVA_COMMAND[@]}") </dev/null >>"$LOG_FILE" 2>&1 &
  else
    # NOTE: untested, because every machine used so far had setsid (util-linux).
    (cd "$KAFKA_DATA_DIR" && exec nohup "${JAVA_COMMAND[@]}") </dev/null >>"$LOG_FILE" 2>&1 &
  fi
  printf '%s\n' "$!" >"$PID_FILE"
}

print_log_tail() {
  if [[ ! -s $LOG_FILE ]]; then
    printf '%s: the broker log %s is empty\n' "$SCRIPT_NAME" "$LOG_FILE" >&2
    return 0
  fi
  printf '%s: last lines of %s:\n' "$SCRIPT_NAME" "$LOG_FILE" >&2
  tail -n 40 "$LOG_FILE" >&2 || true
}

# Waits until the client port accepts connections and the log has the started line.
wait_until_ready() {
  local pid="$1"
  local started_at=$SECONDS
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while true; do
    if ! is_broker_process "$pid"; then
      print_log_tail
      rm -f "$PID_FILE"
      die "the broker exited during startup; see $LOG_FILE"
    fi
    if port_accepts_connections "$KAFKA_PORT" && grep -qF "$STARTED_LOG_LINE" "$LOG_FILE"; then
      log "broker ready on 127.0.0.1:$KAFKA_PORT after $((SECONDS - started_at))s (pid $pid)"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail
      stop_broker_process "$pid"
      rm -f "$PID_FILE"
      die "timed out after ${KAFKA_START_TIMEOUT}s waiting for the broker to accept connections, so it was stopped. Raise KAFKA_START_TIMEOUT if the machine is slow."
    fi
    sleep 0.5
  done
}

cmd_start() {
  local pid port
  if pid="$(find_broker_pid)"; then
    log "the broker is already running (pid $pid, 127.0.0.1:$KAFKA_PORT, data folder $KAFKA_DATA_DIR)"
    return 0
  fi
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_accepts_connections "$port"; then
      die "port $port on 127.0.0.1 is already in use by another process. Stop it (find it with 'ss -ltnp' or 'lsof -i :$port') or choose other ports with KAFKA_PORT and KAFKA_CONTROLLER_PORT."
    fi
  done

  require_java
  cmd_fetch
  mkdir -p "$KAFKA_DATA_DIR"
  # A pid file left after a crash or reboot names no running broker.
  rm -f "$PID_FILE"
  write_server_properties
  # StorageTool writes meta.properties when it formats, so its presence means that
  # the storage is formatted and already has a cluster id and the existing topics.
  if [[ -f "$STORAGE_DIR/meta.properties" ]]; then
    log "reusing the formatted storage in $STORAGE_DIR"
  else
    format_storage
  fi

  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller port $KAFKA_CONTROLLER_PORT, log $LOG_FILE)"
  launch_broker
  wait_until_ready "$(<"$PID_FILE")"
}

# ---------------------------------------------------------------------------
# stop, status, reset

cmd_stop() {
  local pid
  if ! pid="$(find_broker_pid)"; then
    rm -f "$PID_FILE"
    log "no broker is running for $KAFKA_DATA_DIR"
    return 0
  fi
  stop_broker_process "$pid"
  rm -f "$PID_FILE"
  log "the broker has stopped"
}

cmd_status() {
  local pid
  if ! pid="$(find_broker_pid)"; then
    log "not running (data folder $KAFKA_DATA_DIR)"
    return 1
  fi
  if port_accepts_connections "$KAFKA_PORT"; then
    log "running (pid $pid, 127.0.0.1:$KAFKA_PORT, data folder $KAFKA_DATA_DIR)"
  else
    log "running (pid $pid, data folder $KAFKA_DATA_DIR), but 127.0.0.1:$KAFKA_PORT does not accept connections"
  fi
}

cmd_reset() {
  cmd_stop
  if [[ ! -e $KAFKA_DATA_DIR ]]; then
    log "nothing to delete: $KAFKA_DATA_DIR does not exist"
    return 0
  fi

  # Delete only a folder that start created, in case KAFKA_DATA_DIR is mistyped.
  local first_line=""
  if [[ -f $PROPERTIES_FILE ]]; then
    IFS= read -r first_line <"$PROPERTIES_FILE" || true
  fi
  if [[ $first_line != "$PROPERTIES_MARKER"* ]]; then
    die "not deleting $KAFKA_DATA_DIR because it has no server.properties written by kafka.sh. Check KAFKA_DATA_DIR, and delete the folder by hand if it is safe."
  fi
  rm -rf -- "$KAFKA_DATA_DIR"
  log "deleted $KAFKA_DATA_DIR"
}

# ---------------------------------------------------------------------------

main() {
  if (($# != 1)); then
    printf '%s: error: expected exactly one command, got %d arguments\n\n' "$SCRIPT_NAME" "$#" >&2
    usage >&2
    exit 2
  fi
  case "$1" in
    help | -h | --help)
      usage
      return 0
      ;;
    fetch | start | stop | status | reset) ;;
    *)
      printf "%s: error: unknown command '%s'\n\n" "$SCRIPT_NAME" "$1" >&2
      usage >&2
      exit 2
      ;;
  esac

  load_settings
  "cmd_$1"
}

main "$@"
