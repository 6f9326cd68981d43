#!/usr/bin/env bash
# The steps of actions/cloud-run-deploy: deploy (no traffic, tagged), smoke, and (in Python)
# the reference-sample check and the rollout.
# Inputs arrive as environment variables (see action.yml); results go to $GITHUB_OUTPUT.
set -euo pipefail

fail() {
  echo "::error title=cloud-run-deploy::$1"
  exit 1
}

output() {
  echo "$1=$2" >> "${GITHUB_OUTPUT}"
}

# gcloud with the optional project and never a prompt.
run_gcloud() {
  local project=()
  if [[ -n "${PROJECT_ID:-}" ]]; then
    project=(--project "${PROJECT_ID}")
  fi
  gcloud --quiet "${project[@]}" "$@"
}

# Prints "url|tag url|revision|previous traffic|top revision" for a service description on
# stdin; the top revision is the one with the most traffic.
describe_fields() {
  python3 -c '
import json, sys
tag = sys.argv[1]
status = json.load(sys.stdin).get("status", {})
traffic = status.get("traffic") or []
tagged = next((t for t in traffic if t.get("tag") == tag), {})
serving = [t for t in traffic if t.get("percent")]
listed = ",".join("%s=%s" % (t.get("revisionName") or "latest", t["percent"]) for t in serving)
top = max(serving, key=lambda t: t["percent"], default={}).get("revisionName", "")
print(status.get("url", ""), tagged.get("url", ""), tagged.get("revisionName", ""), listed or "-", top, sep="|")
' "$1"
}

deploy() {
  [[ -n "${SERVICE}" && -n "${REGION}" ]] || fail "service and region are required"
  if [[ -n "${TO_REVISION:-}" ]]; then
    retag
    return
  fi
  [[ "${IMAGE}" == *@sha256:* ]] || echo "::warning title=cloud-run-deploy::image ${IMAGE} is not pinned by digest"
  local tag="${TAG}"
  if [[ -z "${tag}" ]]; then
    [[ "${GIT_SHA}" =~ ^[0-9a-f]{40}$ ]] || fail "git-sha must be a full 40-character commit SHA, got '${GIT_SHA}'"
    tag="sha-${GIT_SHA:0:7}"
  fi
  [[ "${tag}" =~ ^[a-z][a-z0-9-]{0,45}$ && "${tag}" != *- ]] \
    || fail "tag '${tag}' must be lowercase letters, digits and dashes, start with a letter, end with a letter or digit"
  [[ "${TRAFFIC}" == tag || "${TRAFFIC}" == latest ]] || fail "traffic must be tag or latest, got '${TRAFFIC}'"

  local described errors is_first=false previous="-" previous_revision=""
  errors="$(mktemp)"
  if described="$(run_gcloud run services describe "${SERVICE}" --region "${REGION}" --format json 2> "${errors}")"; then
    IFS="|" read -r _ _ _ previous previous_revision < <(describe_fields "${tag}" <<< "${described}")
  elif grep -q "Cannot find service" "${errors}"; then
    # Cloud Run refuses --no-traffic for a new service: its first revision takes all traffic.
    is_first=true
  else
    cat "${errors}" >&2
    fail "cannot read service ${SERVICE} in ${REGION}: $(tail -n 1 "${errors}")"
  fi

  local args=(run deploy "${SERVICE}" --image "${IMAGE}" --region "${REGION}" --tag "${tag}")
  if [[ "${is_first}" == false ]]; then
    args+=(--no-traffic)
  fi
  if [[ -n "${MIN_INSTANCES}" ]]; then
    # Service-level: a revision-level minimum (--min-instances) stays warm, and billed, on every
    # revision that is tagged or in the traffic list, even at 0% (gcloud run deploy --help;
    # cloud.google.com/run/docs/configuring/min-instances). "default" removes an earlier one.
    args+=(--min "${MIN_INSTANCES}" --min-instances default)
  fi
  local flag value
  # --max-instances is the revision's cap and keeps nothing warm (gcloud 528 has the
  # service-level --max in beta only).
  for flag in max-instances memory cpu concurrency; do
    value="$(printenv "$(tr 'a-z-' 'A-Z_' <<< "${flag}")" || true)"
    if [[ -n "${value}" ]]; then
      args+=("--${flag}" "${value}")
    fi
  done
  local container_env=()
  while IFS= read -r line; do
    if [[ -n "${line// /}" ]]; then container_env+=("${line}"); fi
  done <<< "${ENV_VARS}"
  if ((${#container_env[@]})); then
    # gcloud's alternate-delimiter syntax (^|^) lets values contain commas.
    args+=(--set-env-vars "^|^$(IFS='|'; echo "${container_env[*]}")")
  fi
  if [[ -n "${CUSTOM_AUDIENCE}" ]]; then
    # Added, not set: custom audiences are the service's, for all revisions at once, and
    # --set-custom-audiences "completely replace[s]" the ones others rely on (gcloud 528).
    args+=(--add-custom-audiences "${CUSTOM_AUDIENCE}")
  fi
  local words
  while IFS= read -r line; do
    read -ra words <<< "${line}"
    args+=("${words[@]}")
  done <<< "${FLAGS}"

  echo "deploying ${IMAGE} to ${SERVICE} (${REGION}) as tag ${tag} (first deploy: ${is_first})"
  run_gcloud "${args[@]}"

  deployed "${tag}" "${is_first}" "${previous}" "${previous_revision}" "${IMAGE}"
}

# The outputs of a deploy (or a re-tag): the service read back, the tag's URL and revision.
deployed() {
  local tag="$1" service_url new_tag_url new_revision described
  described="$(run_gcloud run services describe "${SERVICE}" --region "${REGION}" --format json)"
  IFS="|" read -r service_url new_tag_url new_revision _ < <(describe_fields "${tag}" <<< "${described}")
  [[ -n "${new_tag_url}" && -n "${new_revision}" ]] \
    || fail "deployed, but service ${SERVICE} has no traffic entry for tag ${tag}"
  output url "${service_url}"
  output tag-url "${new_tag_url}"
  output revision "${new_revision}"
  output tag "${tag}"
  output first-deploy "$2"
  output previous-traffic "$3"
  output previous-revision "$4"
  output image "$5"
  echo "revision ${new_revision} is at ${new_tag_url}; traffic before: $3"
}

# A rollback to an existing revision of the service: nothing is deployed (a revision is
# immutable: its image, model and settings stay what they were). It gets a tag, and no
# traffic yet, then goes through the same smoke test and rollout as a new revision.
retag() {
  local target="${TO_REVISION}" errors described owner target_image
  [[ "${TRAFFIC}" == tag ]] || fail "a rollback to a revision moves traffic by its tag: traffic must be tag, got '${TRAFFIC}'"
  [[ "${target}" =~ ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
    || fail "revision must be a Cloud Run revision name (lowercase letters, digits and dashes), got '${target}'"
  # Read first for a clear refusal and the image; Cloud Run itself refuses a tag on anything but
  # one of the service's revisions, so a deployer that may not read revisions still goes on.
  errors="$(mktemp)"
  if described="$(run_gcloud run revisions describe "${target}" --region "${REGION}" --format json 2> "${errors}")"; then
    IFS="|" read -r owner target_image < <(python3 -c '
import json, sys
rev = json.load(sys.stdin)
owner = (rev.get("metadata", {}).get("labels") or {}).get("serving.knative.dev/service", "")
containers = rev.get("spec", {}).get("containers") or [{}]
print(owner, containers[0].get("image", ""), sep="|")
' <<< "${described}")
    [[ "${owner}" == "${SERVICE}" ]] \
      || fail "revision ${target} belongs to service '${owner}', not to ${SERVICE}"
  else
    echo "::warning title=cloud-run-deploy::cannot read revision ${target}: $(tail -n 1 "${errors}"); tagging it anyway (Cloud Run refuses a revision that is not ${SERVICE}'s; see gcloud run revisions list --service ${SERVICE} --region ${REGION})"
  fi

  local previous previous_revision tag="${TAG}"
  described="$(run_gcloud run services describe "${SERVICE}" --region "${REGION}" --format json)" \
    || fail "cannot read service ${SERVICE} in ${REGION}"
  IFS="|" read -r _ _ _ previous previous_revision < <(describe_fields "" <<< "${described}")
  [[ "${previous}" != "${target}=100" ]] \
    || fail "revision ${target} already serves all traffic of ${SERVICE}: nothing to roll back"
  if [[ -z "${tag}" ]]; then
    # rollback-<what follows the service name>, e.g. rollback-00042-abc (at most 46 characters).
    tag="rollback-${target#"${SERVICE}"-}"
    tag="${tag:0:46}"
    while [[ "${tag}" == *- ]]; do tag="${tag%-}"; done
  fi
  [[ "${tag}" =~ ^[a-z][a-z0-9-]{0,45}$ && "${tag}" != *- ]] \
    || fail "tag '${tag}' must be lowercase letters, digits and dashes, start with a letter, end with a letter or digit"
  echo "rolling back ${SERVICE} (${REGION}) to its revision ${target} (${target_image:-image unknown}) as tag ${tag}"
  run_gcloud run services update-traffic "${SERVICE}" --region "${REGION}" --update-tags "${tag}=${target}" 2> "${errors}" \
    || { cat "${errors}" >&2; fail "Cloud Run refused to tag revision ${target} of ${SERVICE}: $(grep -v '^ *$' "${errors}" | tail -n 1)"; }
  deployed "${tag}" false "${previous}" "${previous_revision}" "${target_image}"
}

# Explains a failed smoke test in the log, the outputs and the job summary, then fails.
smoke_failed() {
  local reason="$1" where
  if [[ "${FIRST_DEPLOY}" == true ]]; then
    where="first deploy: no earlier revision to keep serving"
  else
    where="traffic stays on ${PREVIOUS_TRAFFIC}"
  fi
  output result "${reason}"
  {
    echo "### Smoke test failed: revision \`${REVISION}\`"
    echo
    echo "${reason}. ${where}; the revision keeps its tag URL ${TAG_URL} for inspection."
  } >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
  fail "smoke test of ${REVISION} failed: ${reason} (${where})"
}

smoke() {
  [[ -f "${SMOKE_REQUEST}" ]] || fail "smoke request ${SMOKE_REQUEST} does not exist"
  [[ "${SMOKE_TIMEOUT}" =~ ^[0-9]+$ ]] || fail "smoke-timeout must be a number of seconds, got '${SMOKE_TIMEOUT}'"
  local token="${IDENTITY_TOKEN:-}"
  if [[ -z "${token}" && -n "${IDENTITY_TOKEN_COMMAND:-}" ]]; then
    token="$(AUDIENCE="${CUSTOM_AUDIENCE:-${SERVICE_URL}}" bash -c "${IDENTITY_TOKEN_COMMAND}")" \
      || fail "identity-token-command failed"
  fi
  local curl_args=(--silent --show-error --max-time 30)
  if [[ -n "${token}" ]]; then
    echo "::add-mask::${token}"
    curl_args+=(--header "Authorization: Bearer ${token}")
  else
    echo "no identity token: the smoke test sends no Authorization header"
  fi
  # Reach the service the way gcloud reaches Google: through its proxy, if it has one.
  if [[ "${CLOUDSDK_PROXY_TYPE:-}" == http && -n "${CLOUDSDK_PROXY_ADDRESS:-}" ]]; then
    curl_args+=(--proxy "http://${CLOUDSDK_PROXY_ADDRESS}:${CLOUDSDK_PROXY_PORT:-80}")
  fi

  local body status deadline=$((SECONDS + SMOKE_TIMEOUT))
  body="$(mktemp)"
  while :; do
    status="$(curl "${curl_args[@]}" --output "${body}" --write-out '%{http_code}' "${TAG_URL}/ready" || true)"
    [[ "${status}" == 200 ]] && break
    if ((SECONDS >= deadline)); then
      smoke_failed "GET /ready answered ${status:-nothing} for ${SMOKE_TIMEOUT}s (last body: $(head -c 300 "${body}"))"
    fi
    sleep 3
  done
  echo "GET ${TAG_URL}/ready -> 200"

  status="$(curl "${curl_args[@]}" --output "${body}" --write-out '%{http_code}' \
    --header 'Content-Type: application/json' --data-binary "@${SMOKE_REQUEST}" "${TAG_URL}/predict" || true)"
  if [[ "${status}" != 200 ]]; then
    smoke_failed "POST /predict answered ${status:-nothing} (body: $(head -c 300 "${body}"))"
  fi
  python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "${body}" 2> /dev/null \
    || smoke_failed "POST /predict answered 200 but not JSON (body: $(head -c 300 "${body}"))"
  echo "POST ${TAG_URL}/predict -> 200: $(head -c 300 "${body}")"
  output result passed
}

# The reference-sample check and the progressive rollout: scripts/rollout.py, from the same
# commit as this action (two levels up), with its standard-library packages.
rollout() {
  local root
  root="$(cd "${GITHUB_ACTION_PATH}/../.." && pwd)"
  PYTHONPATH="${root}/contract/src:${root}/delivery/src" python3 "${root}/scripts/rollout.py" "$1"
}

case "${1:-}" in
  deploy | smoke) "$1" ;;
  rollout) rollout "${2:-}" ;;
  *) fail "usage: deploy.sh deploy|smoke|rollout sample|rollout" ;;
esac
