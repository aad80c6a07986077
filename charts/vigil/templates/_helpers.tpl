{{/* The chart name. */}}
{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, the prefix of every resource. */}}
{{- define "vigil.fullname" -}}
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

{{/* Labels on every resource. */}}
{{- define "vigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the controller's pods. */}}
{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* The ServiceAccount's name. */}}
{{- define "vigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vigil.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The webhook Service's name and DNS name. */}}
{{- define "vigil.webhookService" -}}
{{- printf "%s-webhook" (include "vigil.fullname" .) -}}
{{- end -}}
{{- define "vigil.webhookHost" -}}
{{- printf "%s.%s.svc" (include "vigil.webhookService" .) .Release.Namespace -}}
{{- end -}}

{{/* The Secret with the webhook's certificate. */}}
{{- define "vigil.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "vigil.fullname" .) -}}
{{- end -}}

{{/* Image references. */}}
{{- define "vigil.controllerImage" -}}
{{- printf "%s:%s" .Values.controller.image.repository (default .Chart.AppVersion .Values.controller.image.tag) -}}
{{- end -}}
{{- define "vigil.proxyImage" -}}
{{- printf "%s:%s" .Values.injection.proxy.image.repository (default .Chart.AppVersion .Values.injection.proxy.image.tag) -}}
{{- end -}}

{{/* A token: the value given, else the one already in the cluster, else a new one. */}}
{{- define "vigil.token" -}}
{{- $ := index . 0 -}}
{{- $key := index . 1 -}}
{{- $given := index $.Values.tokens $key -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $.Release.Namespace (printf "%s-tokens" (include "vigil.fullname" $)) -}}
{{- if and $existing (index $existing.data $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the webhooks never see. */}}
{{- define "vigil.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        - kube-system
        - kube-public
        - kube-node-lease
        - {{ .Release.Namespace }}
        {{- range .Values.injection.excludeNamespaces }}
        - {{ . }}
        {{- end }}
    - key: vigil.io/inject
      operator: NotIn
      values:
        - disabled
{{- end -}}
