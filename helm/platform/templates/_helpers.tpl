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
