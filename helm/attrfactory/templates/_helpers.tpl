{{/* vim: set filetype=mustache: */}}

{{- define "attrfactory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "attrfactory.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "attrfactory.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "attrfactory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "attrfactory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "attrfactory.labels" -}}
helm.sh/chart: {{ include "attrfactory.chart" . }}
{{ include "attrfactory.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* "repository:tag" of an image dict; the tag defaults to the chart's appVersion. (list $ .image) */}}
{{- define "attrfactory.image" -}}
{{- $ := index . 0 -}}
{{- $image := index . 1 -}}
{{- $tag := $image.tag | default $.Chart.AppVersion | toString -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}

{{- define "attrfactory.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "attrfactory.fullname" .) -}}
{{- end -}}

{{- define "attrfactory.jobServiceAccountName" -}}
{{- .Values.runner.serviceAccount.name | default (printf "%s-job" (include "attrfactory.fullname" .)) -}}
{{- end -}}

{{- define "attrfactory.runnerNamespace" -}}
{{- .Values.runner.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "attrfactory.dataClaimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "attrfactory.fullname" .)) -}}
{{- end -}}

{{- define "attrfactory.specsConfigMapName" -}}
{{- .Values.specs.existingConfigMap | default (printf "%s-specs" (include "attrfactory.fullname" .)) -}}
{{- end -}}

{{- define "attrfactory.modelServerName" -}}
{{- printf "%s-model-server" (include "attrfactory.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The job image: runner.image, else the first deployment's image. */}}
{{- define "attrfactory.jobImage" -}}
{{- if .Values.runner.image.repository -}}
{{- include "attrfactory.image" (list . .Values.runner.image) -}}
{{- else -}}
{{- include "attrfactory.image" (list . (first .Values.deployments).image) -}}
{{- end -}}
{{- end -}}

{{/* OPENAI_BASE_URL: the in-chart model server when enabled, else openai.baseUrl (may be empty). */}}
{{- define "attrfactory.openaiBaseUrl" -}}
{{- if .Values.modelServer.enabled -}}
{{- printf "http://%s.%s.svc:%v/v1" (include "attrfactory.modelServerName" .) .Release.Namespace .Values.modelServer.port -}}
{{- else -}}
{{- .Values.openai.baseUrl -}}
{{- end -}}
{{- end -}}

{{/* The env every user-code container (and the runs launched from it) gets. (list $ $deployment) */}}
{{- define "attrfactory.factoryEnv" -}}
{{- $ := index . 0 -}}
{{- $deployment := index . 1 -}}
{{- $baseUrl := include "attrfactory.openaiBaseUrl" $ -}}
{{- $jobEnv := deepCopy ($.Values.runner.env | default dict) -}}
{{- if $baseUrl }}{{- $_ := set $jobEnv "OPENAI_BASE_URL" $baseUrl -}}{{- end }}
- name: DAGSTER_CURRENT_IMAGE
  value: {{ include "attrfactory.image" (list $ $deployment.image) | quote }}
- name: DAGSTER_HOME
  value: {{ $.Values.dagsterHome | quote }}
- name: FACTORY_RUNNER
  value: {{ $.Values.runner.kind | quote }}
- name: FACTORY_NAMESPACE
  value: {{ include "attrfactory.runnerNamespace" $ | quote }}
- name: FACTORY_IMAGE
  value: {{ include "attrfactory.jobImage" $ | quote }}
- name: FACTORY_IMAGE_PULL_POLICY
  value: {{ $.Values.runner.image.pullPolicy | default "IfNotPresent" | quote }}
- name: FACTORY_SERVICE_ACCOUNT
  value: {{ include "attrfactory.jobServiceAccountName" $ | quote }}
- name: FACTORY_NODE_SELECTOR
  value: {{ $.Values.runner.nodeSelector | default dict | toJson | quote }}
- name: FACTORY_TOLERATIONS
  value: {{ $.Values.runner.tolerations | default list | toJson | quote }}
- name: FACTORY_JOB_ENV
  value: {{ $jobEnv | toJson | quote }}
- name: FACTORY_SPECS_DIR
  value: {{ $.Values.specs.mountPath | quote }}
{{- if $.Values.persistence.enabled }}
- name: FACTORY_DATA_PVC
  value: {{ include "attrfactory.dataClaimName" $ | quote }}
- name: FACTORY_DATA_MOUNT
  value: {{ $.Values.persistence.mountPath | quote }}
{{- if not $.Values.store.url }}
- name: FACTORY_STORE
  value: {{ printf "%s/factory-store" (trimSuffix "/" $.Values.persistence.mountPath) | quote }}
{{- end }}
- name: FACTORY_EXPORT_DIR
  value: {{ printf "%s/exports" (trimSuffix "/" $.Values.persistence.mountPath) | quote }}
{{- end }}
{{- if $.Values.store.url }}
- name: FACTORY_STORE
  value: {{ $.Values.store.url | quote }}
{{- end }}
{{- if $.Values.store.dataPath }}
- name: FACTORY_DATA_PATH
  value: {{ $.Values.store.dataPath | quote }}
{{- end }}
{{- if $.Values.store.passwordSecret.name }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.store.passwordSecret.name | quote }}
      key: {{ $.Values.store.passwordSecret.key | quote }}
- name: FACTORY_STORE_PASSWORD_SECRET
  value: {{ printf "%s:%s" $.Values.store.passwordSecret.name $.Values.store.passwordSecret.key | quote }}
{{- end }}
{{- if $baseUrl }}
- name: OPENAI_BASE_URL
  value: {{ $baseUrl | quote }}
{{- end }}
- name: FACTORY_API_KEY_ENV
  value: {{ $.Values.apiKey.envName | quote }}
{{- if $.Values.apiKey.existingSecret }}
- name: FACTORY_API_KEY_SECRET
  value: {{ printf "%s:%s" $.Values.apiKey.existingSecret $.Values.apiKey.key | quote }}
- name: {{ $.Values.apiKey.envName }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.apiKey.existingSecret | quote }}
      key: {{ $.Values.apiKey.key | quote }}
{{- end }}
{{- if $.Values.postgresqlSecretName }}
- name: DAGSTER_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.postgresqlSecretName | quote }}
      key: postgresql-password
{{- end }}
{{- end -}}

{{/* Volumes the chart adds to user-code pods (the data volume, the specs). */}}
{{- define "attrfactory.volumes" -}}
{{- if .Values.persistence.enabled }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "attrfactory.dataClaimName" . }}
{{- end }}
- name: specs
  configMap:
    name: {{ include "attrfactory.specsConfigMapName" . }}
{{- end -}}

{{- define "attrfactory.volumeMounts" -}}
{{- if .Values.persistence.enabled }}
- name: data
  mountPath: {{ .Values.persistence.mountPath }}
{{- end }}
- name: specs
  mountPath: {{ .Values.specs.mountPath }}
  readOnly: true
{{- end -}}

{{/* Dagster's container context for runs launched from this code location (K8sRunLauncher). */}}
{{- define "attrfactory.k8sContainerContext" -}}
{{- $ := index . 0 -}}
{{- $deployment := index . 1 -}}
{{- $env := concat (include "attrfactory.factoryEnv" (list $ $deployment) | fromYamlArray) ($deployment.env | default list) -}}
{{- $volumes := concat (include "attrfactory.volumes" $ | fromYamlArray) ($deployment.volumes | default list) -}}
{{- $mounts := concat (include "attrfactory.volumeMounts" $ | fromYamlArray) ($deployment.volumeMounts | default list) -}}
{{- $k8s := dict "image_pull_policy" $deployment.image.pullPolicy "namespace" $.Release.Namespace "service_account_name" (include "attrfactory.serviceAccountName" $) "env" $env "volumes" $volumes "volume_mounts" $mounts -}}
{{- if $.Values.imagePullSecrets }}{{- $_ := set $k8s "image_pull_secrets" $.Values.imagePullSecrets -}}{{- end }}
{{- $cms := list -}}
{{- range $deployment.envConfigMaps }}{{- if .name }}{{- $cms = append $cms .name -}}{{- end }}{{- end }}
{{- if $cms }}{{- $_ := set $k8s "env_config_maps" $cms -}}{{- end }}
{{- $secrets := list -}}
{{- range $deployment.envSecrets }}{{- if .name }}{{- $secrets = append $secrets .name -}}{{- end }}{{- end }}
{{- if $secrets }}{{- $_ := set $k8s "env_secrets" $secrets -}}{{- end }}
{{- if $deployment.resources }}{{- $_ := set $k8s "resources" $deployment.resources -}}{{- end }}
{{- if $deployment.podSecurityContext }}{{- $_ := set $k8s "run_k8s_config" (dict "pod_spec_config" (dict "security_context" $deployment.podSecurityContext)) -}}{{- end }}
{{- dict "k8s" $k8s | toJson -}}
{{- end -}}
