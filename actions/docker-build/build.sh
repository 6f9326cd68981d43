#!/usr/bin/env bash
# The step of actions/docker-build; inputs arrive as environment variables (see action.yml),
# results go to $GITHUB_OUTPUT. The local pipeline (scripts/local_pipeline.py) runs it too.
set -euo pipefail
fail() { echo "::error title=docker-build::$1"; exit 1; }
[[ "${GIT_SHA}" =~ ^[0-9a-f]{40}$ ]] || fail "git-sha must be a full 40-character commit SHA, got '${GIT_SHA}'"
[[ -z "${MODEL_VERSION}" || "${MODEL_VERSION}" =~ ^[0-9]+$ ]] || fail "model-version must be a number, got '${MODEL_VERSION}'"
[[ -d "${CONTEXT}" ]] || fail "build context ${CONTEXT} is not a directory"
dockerfile="${DOCKERFILE:-${CONTEXT}/Dockerfile}"
[[ -f "${dockerfile}" ]] || fail "Dockerfile ${dockerfile} does not exist"
[[ -e "${CONTEXT}/${MODEL_DIR}" ]] || fail "model directory ${CONTEXT}/${MODEL_DIR} does not exist: bake the model first"

image="${IMAGE_NAME}:${GIT_SHA}"
iidfile="$(mktemp)"
args=(build --file "${dockerfile}" --tag "${image}" --iidfile "${iidfile}"
  --build-arg "GIT_SHA=${GIT_SHA}" --build-arg "IMAGE_TAG=${GIT_SHA}"
  --build-arg "MODEL_DIR=${MODEL_DIR}"
  --label "org.opencontainers.image.revision=${GIT_SHA}"
  --label "org.opencontainers.image.source=${GITHUB_SERVER_URL}/${GITHUB_REPOSITORY}"
  --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  --label "org.opencontainers.image.title=${IMAGE_NAME}")
if [[ -n "${MODEL_VERSION}" ]]; then
  args+=(--build-arg "MODEL_VERSION=${MODEL_VERSION}"
    --label "org.opencontainers.image.version=model-${MODEL_VERSION}"
    --label "purchase-predict.model-version=${MODEL_VERSION}")
fi
if [[ -n "${BASE_IMAGE}" ]]; then
  args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
fi
network="${NETWORK:-${DOCKER_BUILD_NETWORK:-}}"
if [[ -n "${network}" ]]; then
  args+=(--network "${network}")
fi
while IFS= read -r line; do
  if [[ -n "${line// /}" ]]; then args+=(--build-arg "${line}"); fi
done <<< "${EXTRA_BUILD_ARGS}"
while IFS= read -r line; do
  if [[ -n "${line// /}" ]]; then args+=(--label "${line}"); fi
done <<< "${EXTRA_LABELS}"

docker "${args[@]}" "${CONTEXT}"
{
  echo "image=${image}"
  echo "image-id=$(cat "${iidfile}")"
} >> "${GITHUB_OUTPUT}"
rm -f "${iidfile}"
