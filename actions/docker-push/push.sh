#!/usr/bin/env bash
# The step of actions/docker-push; inputs arrive as environment variables (see action.yml),
# results go to $GITHUB_OUTPUT. The local pipeline (scripts/local_pipeline.py) runs it too.
set -euo pipefail
fail() { echo "::error title=docker-push::$1"; exit 1; }
[[ "${GIT_SHA}" =~ ^[0-9a-f]{40}$ ]] || fail "git-sha must be a full 40-character commit SHA, got '${GIT_SHA}'"
host="${REGISTRY}"
if [[ -z "${host}" ]]; then
  [[ -n "${REGION}" ]] || fail "give registry or region (the default host is <region>-docker.pkg.dev)"
  host="${REGION}-docker.pkg.dev"
fi
project="${PROJECT_ID:-$(gcloud config get-value project 2>/dev/null || true)}"
[[ -n "${project}" ]] || fail "no project: give project-id or configure a gcloud project"

case "${CONFIGURE_AUTH}" in
  auto) if [[ "${host}" == *.pkg.dev ]]; then auth=gcloud; else auth=none; fi ;;
  gcloud | none) auth="${CONFIGURE_AUTH}" ;;
  *) fail "configure-auth must be auto, gcloud or none, got '${CONFIGURE_AUTH}'" ;;
esac
if [[ "${auth}" == gcloud ]]; then
  # Credential helper entry for this host only; no token is written to disk.
  gcloud auth configure-docker "${host}" --quiet
fi

remote="${host}/${project}/${REPOSITORY}/${IMAGE_NAME}"
docker tag "${LOCAL_IMAGE}" "${remote}:${GIT_SHA}"
docker push "${remote}:${GIT_SHA}"
digest=""
while IFS= read -r reference; do
  if [[ "${reference}" == "${remote}@sha256:"* ]]; then
    digest="${reference#"${remote}@"}"
    break
  fi
done < <(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "${remote}:${GIT_SHA}")
[[ -n "${digest}" ]] || fail "pushed ${remote}:${GIT_SHA} but found no digest for it"
{
  echo "image=${remote}@${digest}"
  echo "digest=${digest}"
  echo "tagged-image=${remote}:${GIT_SHA}"
} >> "${GITHUB_OUTPUT}"
echo "pushed ${remote}:${GIT_SHA} as ${remote}@${digest}"
