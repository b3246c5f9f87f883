{{- define "pl.labels" -}}
app.kubernetes.io/part-of: motioncontrol-platform
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/name: {{ .name }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "pl.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .name }}
{{- end -}}

{{- define "pl.image" -}}
image: {{ include "pl.imageRef" . | quote }}
imagePullPolicy: {{ .root.Values.pullPolicy }}
{{- end -}}

{{/* repository:tag of images.<image>; an empty tag is the chart's appVersion (the
project's own images: one place sets their tag). */}}
{{- define "pl.imageRef" -}}
{{- $img := index .root.Values.images .image -}}
{{- printf "%s:%s" $img.repository ($img.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* Pod-level hardening shared by every workload: non-root, seccomp. */}}
{{- define "pl.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid | default 10001 }}
  runAsGroup: {{ .uid | default 10001 }}
  fsGroup: {{ .uid | default 10001 }}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Container-level hardening: read-only root filesystem, no privilege, no capabilities. */}}
{{- define "pl.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{- define "pl.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.s3 }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.s3 }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end -}}

{{- define "pl.postgresEnv" -}}
- name: POSTGRES_USER
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.postgres }}, key: POSTGRES_USER}}
- name: POSTGRES_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.postgres }}, key: POSTGRES_PASSWORD}}
{{- end -}}

{{- define "pl.postgresHost" -}}
{{- if .Values.postgresql.enabled -}}{{ .Release.Name }}-postgresql{{- else -}}{{ required "postgresql.external.host is required when postgresql.enabled=false" .Values.postgresql.external.host }}{{- end -}}
{{- end -}}

{{- define "pl.postgresPort" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.postgresql.external.port }}{{- end -}}
{{- end -}}

{{- define "pl.s3Endpoint" -}}
http://{{ .Release.Name }}-minio:9000
{{- end -}}

{{/* A ClusterIP Service in front of one component. */}}
{{- define "pl.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .root.Release.Name }}-{{ .name }}
  labels:
    {{- include "pl.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "pl.selector" . | nindent 4 }}
  ports:
    - {name: {{ .portName }}, port: {{ .port }}, targetPort: {{ .portName }}, protocol: TCP}
{{- end -}}

{{/* The ServiceAccount of one component, without an API token unless it needs one. */}}
{{- define "pl.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .root.Release.Name }}-{{ .name }}
  labels:
    {{- include "pl.labels" . | nindent 4 }}
automountServiceAccountToken: {{ .token | default false }}
{{- end -}}

{{/* The MC_* settings (flows/settings.py) that point a pod of the platform image at this
release's services: the object store (MinIO, credentials from secrets.s3 beside them) and
MLflow. One place for the flow-run pods (base job template) and the Ray nodes. */}}
{{- define "pl.mcSettings" -}}
MC_PROFILE: base
MC_STORE_BACKEND: s3
MC_S3_ENDPOINT: {{ printf "%s-minio:9000" .Release.Name | quote }}
MC_S3_BUCKET: {{ .Values.minio.bucket | quote }}
MC_MLFLOW_TRACKING_URI: {{ printf "http://%s-mlflow:%v" .Release.Name .Values.mlflow.port | quote }}
{{- end -}}

{{/* pl.mcSettings as a container's env list. */}}
{{- define "pl.mcSettingsEnv" -}}
{{- range $name, $value := include "pl.mcSettings" . | fromYaml }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The KubeRay RayCluster (ray.enabled): its name, the head Service KubeRay names after it,
and the Ray Client address the flow-run pods get (MC_CURATE__RAY_ADDRESS). */}}
{{- define "pl.rayCluster" -}}
{{- $name := printf "%s-ray" .Release.Name -}}
{{- if gt (len $name) 50 -}}
{{- fail (printf "the RayCluster name %q is longer than 50 characters (KubeRay shortens longer ones): use a shorter release name" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "pl.rayHeadService" -}}
{{- include "pl.rayCluster" . }}-head-svc
{{- end -}}

{{- define "pl.rayAddress" -}}
ray://{{ include "pl.rayHeadService" . }}:10001
{{- end -}}

{{/* The environment of every Ray container: the MC_* settings of the flow runs (object store,
MLflow) and the object store's credentials, so the curation stages open the store there. */}}
{{- define "pl.rayEnv" -}}
{{- include "pl.mcSettingsEnv" . | trim }}
{{ include "pl.s3Env" . }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- end -}}

{{/* One worker group: replicas within minReplicas..maxReplicas, its resources, its pool;
`gpus` > 0 asks for that many nvidia.com/gpu (requests = limits; Ray reads the limit). */}}
{{- define "pl.rayWorkerGroup" -}}
{{- $root := .root }}
{{- $group := .group }}
{{- $resources := deepCopy $group.resources }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $resources.requests "nvidia.com/gpu" (int .gpus) }}
{{- $_ := set $resources.limits "nvidia.com/gpu" (int .gpus) }}
{{- end }}
- groupName: {{ .groupName }}
  replicas: {{ $group.replicas }}
  minReplicas: {{ $group.minReplicas }}
  maxReplicas: {{ $group.maxReplicas }}
  rayStartParams: {}
  template:
    metadata:
      labels:
        {{- include "pl.labels" (dict "root" $root "name" "ray") | nindent 8 }}
    spec:
      serviceAccountName: {{ $root.Release.Name }}-ray
      automountServiceAccountToken: false
      {{- include "pl.podSecurity" dict | nindent 6 }}
      {{- with $group.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-worker
          {{- include "pl.image" (dict "root" $root "image" "platform") | nindent 10 }}
          env:
            {{- include "pl.rayEnv" $root | nindent 12 }}
          {{- include "pl.rayProbes" . | nindent 10 }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          {{- include "pl.containerSecurity" $root | nindent 10 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: {{ $root.Values.ray.scratchSize }}}
{{- end -}}

{{/* The probes KubeRay gives Ray >= 2.53, stated here so that they hold whatever the operator's
version (earlier ones exec wget, which the platform image lacks): the dashboard agent's
/api/healthz answers "success" while the node's raylet and the GCS are up. */}}
{{- define "pl.rayProbes" -}}
readinessProbe:
  httpGet: {path: /api/healthz, port: 52365}
  initialDelaySeconds: 10
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 10
livenessProbe:
  httpGet: {path: /api/healthz, port: 52365}
  initialDelaySeconds: 30
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 120
{{- end -}}
